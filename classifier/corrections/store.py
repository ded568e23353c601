"""Storing and reviewing the users' corrections: the one place that writes `Correction` rows.

Synchronous ORM: the inference worker calls `save_correction` for each feedback request of a
batch; the admin and `manage.py feedback` call the rest. Every function takes `using`, the
database alias (the tests run them against SQLite and PostgreSQL).

Nothing here imports numpy or Pillow at module level: the web process loads this module for the
admin, and Pillow is imported only when a thumbnail or an export is drawn.
"""

from __future__ import annotations

import base64
import hashlib
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from django.db import IntegrityError, transaction
from django.db.models import Count
from django.utils import timezone

from classifier.corrections.models import IMAGE28_BYTES, MAX_MODEL_CHARS, Correction, Status
from classifier.ml.input import DIGITS, IMAGE_SIZE, MAX_IMAGE_BYTES

if TYPE_CHECKING:
    import numpy as np

# The media types a stored image may carry (the formats the service decodes).
MEDIA_TYPES = ("image/png", "image/jpeg", "image/webp")


class FeedbackLimit(Exception):
    """The client has stored `limit` new corrections in the last hour already; nothing was
    written. One client must not be able to fill the table."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"this client stored {limit} corrections in the last hour already")


class UnknownCorrections(LookupError):
    """Some of the ids asked for are not corrections; nothing was changed."""

    def __init__(self, missing: Iterable[int]) -> None:
        self.missing = sorted(missing)
        super().__init__("no correction with id " + ", ".join(map(str, self.missing)))


def _is_digit(value: object) -> bool:
    # bool is an int subclass; True is not the digit 1.
    return isinstance(value, int) and not isinstance(value, bool) and value in DIGITS


def image28_bytes(image28: np.ndarray) -> bytes:
    """The 784 bytes of a 28x28 uint8 image, row by row; ValueError for anything else."""
    shape = getattr(image28, "shape", None)
    dtype = str(getattr(image28, "dtype", ""))
    if shape != (IMAGE_SIZE, IMAGE_SIZE) or dtype != "uint8":
        raise ValueError(
            f"image28 must be a {IMAGE_SIZE}x{IMAGE_SIZE} uint8 array, not {shape} {dtype}"
        )
    return image28.tobytes()


def image_hash(pixels: bytes) -> str:
    """What makes two corrections the same drawing: the sha256 of the 28x28 image's bytes."""
    return hashlib.sha256(pixels).hexdigest()


def save_correction(
    *,
    image: bytes,
    media_type: str,
    image28: np.ndarray,
    label: int,
    predicted: int,
    confidence: float,
    probabilities: Sequence[float],
    model_version: str,
    client_predicted: int | None,
    client_model: str | None,
    client_hash: str,
    ink: list[list[list[float]]] | None = None,
    per_hour: int | None = None,
    using: str = "default",
) -> tuple[Correction, bool]:
    """Store a correction; returns the row and whether it is new.

    A drawing comes as an image file (`image` with its `media_type`) or as `ink`, the strokes
    as the protocol checked them (then `image` is empty and `media_type` ""). The same 28x28
    image stored again (by anyone, with any label) returns the row already there and False: a
    drawing sent many times counts once. Arguments out of bounds raise ValueError before
    anything is written. With `per_hour` (above 0), a new drawing from a client (`client_hash`)
    that has stored that many in the last hour raises FeedbackLimit (a drawing already stored
    does not count and is not refused). Two workers storing for one client at the same moment
    may both pass: it is a cap on filling the table, not an exact quota.
    """
    pixels = image28_bytes(image28)
    if not _is_digit(label):
        raise ValueError(f"label must be a digit 0-9, not {label!r}")
    if not _is_digit(predicted):
        raise ValueError(f"predicted must be a digit 0-9, not {predicted!r}")
    if client_predicted is not None and not _is_digit(client_predicted):
        raise ValueError(f"client_predicted must be a digit 0-9 or None, not {client_predicted!r}")
    if ink is not None:
        if not isinstance(ink, list) or not ink or image or media_type:
            raise ValueError("ink must be a non-empty list of strokes, with no image")
    elif not isinstance(image, bytes | bytearray | memoryview) or not 0 < len(image) <= (
        MAX_IMAGE_BYTES
    ):
        raise ValueError(f"image must be 1 to {MAX_IMAGE_BYTES} bytes")
    elif media_type not in MEDIA_TYPES:
        raise ValueError(f"media_type must be one of {', '.join(MEDIA_TYPES)}, not {media_type!r}")
    probabilities = [float(p) for p in probabilities]
    if len(probabilities) != len(DIGITS):
        raise ValueError(f"probabilities must hold {len(DIGITS)} values, not {len(probabilities)}")
    for name, text in (("model_version", model_version), ("client_model", client_model)):
        if text is not None and len(text) > MAX_MODEL_CHARS:
            raise ValueError(f"{name} is longer than {MAX_MODEL_CHARS} characters")

    digest = image_hash(pixels)
    existing = Correction.objects.using(using).filter(image_hash=digest).first()
    if existing is not None:
        return existing, False
    if per_hour and per_hour > 0 and stored_last_hour(client_hash, using=using) >= per_hour:
        raise FeedbackLimit(per_hour)
    row = Correction(
        image=bytes(image),
        media_type=media_type,
        ink=ink,
        image28=pixels,
        image_hash=digest,
        label=label,
        predicted=predicted,
        confidence=float(confidence),
        probabilities=probabilities,
        model_version=model_version,
        client_predicted=client_predicted,
        client_model=client_model,
        client_hash=client_hash,
    )
    try:
        # Its own savepoint, so a lost race on the unique hash leaves the caller's
        # transaction usable (PostgreSQL aborts a transaction on any error).
        with transaction.atomic(using=using):
            row.save(using=using)
    except IntegrityError:
        # Another worker stored the same image between our look-up and our insert.
        existing = Correction.objects.using(using).filter(image_hash=digest).first()
        if existing is None:
            raise
        return existing, False
    return row, True


def stored_last_hour(client_hash: str, *, using: str = "default") -> int:
    """How many corrections the client with this `client_hash` stored in the last hour."""
    since = timezone.now() - timedelta(hours=1)
    rows = Correction.objects.using(using).filter(client_hash=client_hash, created__gte=since)
    return rows.count()


def stats(*, using: str = "default") -> dict[str, Any]:
    """Counts of corrections: `total`, `by_status` ({status: n}, every status) and `by_label`
    ({digit: {status: n}}, every digit and status, zeros included)."""
    by_status = dict.fromkeys(Status.values, 0)
    by_label = {digit: dict.fromkeys(Status.values, 0) for digit in DIGITS}
    rows = (
        Correction.objects.using(using)
        .values_list("label", "status")
        .order_by()
        .annotate(n=Count("id"))
    )
    for label, status, n in rows:
        by_status[status] += n
        by_label[label][status] += n
    return {"total": sum(by_status.values()), "by_status": by_status, "by_label": by_label}


def set_status(ids: Iterable[int] | None, status: str, *, using: str = "default") -> int:
    """Mark corrections `status` and stamp them reviewed now; returns how many changed.

    `ids` None means every pending correction (`feedback accept --all`). With ids, every one must
    exist, or UnknownCorrections is raised and nothing changes. Back to `pending` clears the
    review time.
    """
    if status not in Status.values:
        raise ValueError(f"status must be one of {', '.join(Status.values)}, not {status!r}")
    reviewed = None if status == Status.PENDING else timezone.now()
    with transaction.atomic(using=using):
        rows = Correction.objects.using(using)
        if ids is None:
            rows = rows.filter(status=Status.PENDING)
        else:
            wanted = {int(i) for i in ids}
            found = set(rows.filter(pk__in=wanted).values_list("pk", flat=True))
            if wanted - found:
                raise UnknownCorrections(wanted - found)
            rows = rows.filter(pk__in=wanted)
        return rows.update(status=status, reviewed=reviewed)


def purge(
    older_than: timedelta,
    statuses: Iterable[str] | None = None,
    *,
    dry_run: bool = False,
    using: str = "default",
) -> tuple[datetime, dict[str, int]]:
    """Delete the corrections created more than `older_than` ago, of `statuses` only (None:
    every status); returns the cut-off time and how many of each status went (all statuses,
    zeros included). `dry_run` counts them and deletes nothing."""
    wanted = list(Status.values if statuses is None else dict.fromkeys(statuses))
    for status in wanted:
        if status not in Status.values:
            raise ValueError(f"status must be one of {', '.join(Status.values)}, not {status!r}")
    if older_than < timedelta(0):
        raise ValueError(f"older_than must not be negative, not {older_than}")
    cutoff = timezone.now() - older_than
    counts = dict.fromkeys(Status.values, 0)
    with transaction.atomic(using=using):
        rows = Correction.objects.using(using).filter(created__lt=cutoff, status__in=wanted)
        for status, n in rows.values_list("status").order_by().annotate(n=Count("id")):
            counts[status] = n
        if not dry_run:
            rows.delete()
    return cutoff, counts


def png_bytes(pixels: bytes) -> bytes:
    """A 28x28 greyscale PNG of a stored image28."""
    from PIL import Image

    if len(pixels) != IMAGE28_BYTES:
        raise ValueError(f"a 28x28 image has {IMAGE28_BYTES} bytes, not {len(pixels)}")
    buffer = io.BytesIO()
    Image.frombytes("L", (IMAGE_SIZE, IMAGE_SIZE), bytes(pixels)).save(buffer, format="PNG")
    return buffer.getvalue()


def thumbnail_data_url(pixels: bytes) -> str:
    """The 28x28 image as a PNG data URL, for an <img> in the admin."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(pixels)).decode("ascii")


def image_data_url(correction: Correction) -> str | None:
    """The image as the client sent it, as a data URL; None for a media type the service does
    not accept (never rendered)."""
    if correction.media_type not in MEDIA_TYPES:
        return None
    data = base64.b64encode(bytes(correction.image)).decode("ascii")
    return f"data:{correction.media_type};base64,{data}"


def export(
    directory: Path | str, status: str = Status.ACCEPTED, *, using: str = "default"
) -> dict[int, int]:
    """Write the corrections with `status` as `directory/<digit>/<id>.png` (28x28 greyscale),
    the layout torchvision's ImageFolder reads; returns how many went to each digit.

    Only digits with at least one image get a folder (ImageFolder refuses empty ones), so a
    sample's digit is `int(dataset.classes[target])`, not the target itself. The directory must
    be new or empty: a file left from an earlier export (since rejected) must never train.
    """
    if status not in Status.values:
        raise ValueError(f"status must be one of {', '.join(Status.values)}, not {status!r}")
    root = Path(directory)
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise FileExistsError(f"{root} exists and is not an empty directory")
    root.mkdir(parents=True, exist_ok=True)
    counts = dict.fromkeys(DIGITS, 0)
    rows = (
        Correction.objects.using(using)
        .filter(status=status)
        .order_by("id")
        .values_list("id", "label", "image28")
    )
    for pk, label, pixels in rows.iterator(chunk_size=500):
        folder = root / str(label)
        folder.mkdir(exist_ok=True)
        (folder / f"{pk}.png").write_bytes(png_bytes(bytes(pixels)))
        counts[label] += 1
    return counts


@dataclass(frozen=True)
class AcceptedCorrections:
    """The accepted corrections as training data: ids and image hashes (for the manifest), the
    28x28 images (uint8 N x 28 x 28) and their labels (int64 N), in id order."""

    ids: list[int]
    image_hashes: list[str]
    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def accepted_arrays(*, using: str = "default") -> AcceptedCorrections:
    """Every `accepted` correction as arrays; pending and rejected ones never train.

    Duplicates cannot occur: the same 28x28 image is stored once (its hash is unique). Ordered
    by that hash, not by arrival: the same accepted corrections always come in the same order,
    so the same run of `retrain` trains the same candidate however the writers' frames raced.
    """
    import numpy as np

    ids: list[int] = []
    hashes: list[str] = []
    labels: list[int] = []
    pixels = bytearray()
    inks: dict[int, list] = {}  # row index -> the strokes, for corrections sent as ink
    rows = (
        Correction.objects.using(using)
        .filter(status=Status.ACCEPTED)
        .order_by("image_hash")
        .values_list("id", "image_hash", "label", "image28", "ink")
    )
    for pk, digest, label, image28, ink in rows.iterator(chunk_size=2000):
        if ink:
            inks[len(ids)] = ink
        ids.append(pk)
        hashes.append(digest)
        labels.append(label)
        pixels += bytes(image28)
    images = np.frombuffer(bytes(pixels), dtype=np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    images = images.copy()
    if inks:
        # Ink is drawn afresh by today's rasterizer (the one serving uses), so a correction
        # keeps teaching what the person drew, whatever picture of it was stored.
        from classifier.ml.ink import from_lists
        from classifier.ml.rasterizer import rasterize

        rows_with_ink = list(inks)
        images[rows_with_ink] = rasterize([from_lists(inks[i]) for i in rows_with_ink])
    return AcceptedCorrections(ids, hashes, images, np.asarray(labels, dtype=np.int64))


def ink_svg(ink: Sequence[Sequence[Sequence[float]]], size: int = 280) -> str:
    """The strokes of a correction sent as ink as an SVG of polylines, `size` pixels on its
    longest side (white on black, as drawn), for the admin. The numbers were checked finite by
    the protocol; they are written as numbers, so nothing of the client's reaches the markup."""
    points = [(float(p[0]), float(p[1])) for stroke in ink for p in stroke]
    if not points:
        return ""
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    width, height = max(xs) - min(xs), max(ys) - min(ys)
    pad = 0.1 * max(width, height, 1.0)
    view = (min(xs) - pad, min(ys) - pad, width + 2 * pad, height + 2 * pad)
    scale = size / max(view[2], view[3])
    pen = 0.06 * max(view[2], view[3])
    lines = "".join(
        '<polyline fill="none" stroke="#fff" stroke-linecap="round" stroke-linejoin="round" '
        f'stroke-width="{pen:.2f}" points="'
        + " ".join(f"{float(p[0]):.1f},{float(p[1]):.1f}" for p in stroke)
        + '"/>'
        for stroke in ink
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{view[2] * scale:.0f}" '
        f'height="{view[3] * scale:.0f}" viewBox="{view[0]:.1f} {view[1]:.1f} {view[2]:.1f} '
        f'{view[3]:.1f}" style="background:#000" role="img" aria-label="the strokes as sent">'
        f"{lines}</svg>"
    )
