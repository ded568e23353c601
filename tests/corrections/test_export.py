"""Export for training: the accepted corrections as DIR/<digit>/<id>.png, read back by
torchvision's ImageFolder with the stored pixels and labels; nothing pending or rejected."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from torchvision.datasets import ImageFolder

from classifier.corrections import store as corrections
from classifier.corrections.models import Status
from tests.corrections import postgres

pytestmark = pytest.mark.django_db(databases=postgres.DATABASES)


def test_accepted_corrections_export_as_an_image_folder(store, using, drawing, tmp_path) -> None:
    accepted = {}
    for seed, label in [(1, 7), (2, 7), (3, 0), (4, 9)]:
        row, _ = store(seed=seed, label=label)
        accepted[row.pk] = (label, seed)
    pending, _ = store(seed=5, label=3)
    rejected, _ = store(seed=6, label=3)
    corrections.set_status(list(accepted), Status.ACCEPTED, using=using)
    corrections.set_status([rejected.pk], Status.REJECTED, using=using)

    counts = corrections.export(tmp_path / "out", using=using)

    assert counts == {**dict.fromkeys(range(10), 0), 7: 2, 0: 1, 9: 1}
    files = sorted(
        p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*")
    )
    expected = sorted(
        [f"{label}/{pk}.png" for pk, (label, _) in accepted.items()] + ["0", "7", "9"]
    )
    assert files == expected  # neither the pending nor the rejected one (label 3)
    dataset = ImageFolder(str(tmp_path / "out"))
    assert len(dataset) == 4
    for path, target in dataset.samples:
        label, seed = accepted[int(Path(path).stem)]
        assert int(dataset.classes[target]) == label
        pixels = np.asarray(dataset.loader(path).convert("L"))
        assert np.array_equal(pixels, drawing(seed))
    assert pending.pk not in {int(Path(p).stem) for p, _ in dataset.samples}


def test_another_status_can_be_exported(store, using, tmp_path) -> None:
    row, _ = store(seed=7, label=2)
    assert corrections.export(tmp_path / "pending", Status.PENDING, using=using)[2] == 1
    assert (tmp_path / "pending" / "2" / f"{row.pk}.png").is_file()
    assert sum(corrections.export(tmp_path / "accepted", using=using).values()) == 0


def test_a_folder_with_files_in_it_is_refused(store, using, tmp_path) -> None:
    """A file from an earlier export may be of a correction rejected since: it must not train."""
    row, _ = store(seed=8, label=1)
    corrections.set_status([row.pk], Status.ACCEPTED, using=using)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "stale.png").write_bytes(b"")
    with pytest.raises(FileExistsError):
        corrections.export(tmp_path / "old", using=using)
    assert list((tmp_path / "old").iterdir()) == [tmp_path / "old" / "stale.png"]
