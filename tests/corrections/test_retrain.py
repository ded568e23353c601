"""`manage.py retrain` and `manage.py models` on SQLite, with MNIST and real corrections.

The corrections are the project's stroke templates drawn as on the canvas, preprocessed like the
service does, stored through `save_correction` and reviewed with `set_status`. The shipped model
reads every template right, so no candidate could beat it on them; the promotion tests start
from a weak model (one short epoch on 1,000 MNIST images) that a fine-tune measurably improves.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from django.core.management import call_command
from django.core.management.base import CommandError

from classifier.corrections import store as corrections
from classifier.corrections.models import Status
from classifier.ml import modelstore
from classifier.ml.model import FAST_ARCHITECTURE, build_model, model_config
from classifier.ml.preprocessing import preprocess
from classifier.ml.rejection import Rejection
from classifier.ml.training.canvas import render_template_png, template_variants
from classifier.ml.training.data import Split
from classifier.ml.training.finetune import MNIST_TOLERANCE, FinetuneConfig, Scores, finetune, gate
from classifier.ml.weights import load_weights, save_weights, sidecar_path
from tests.helpers import shipped_weights

# Small and quick: the first 1,024 MNIST training images, one epoch, on the CPU.
QUICK = ("--limit", "1024", "--epochs", "1", "--device", "cpu", "--lr", "0.003", "--json")


def run(*args: str) -> tuple[list[str], dict]:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    lines = out.getvalue().splitlines()
    try:
        return lines, json.loads(lines[-1])
    except (IndexError, ValueError):
        return lines, {}


def store_drawings(count: int, status: str, seed: int) -> list[int]:
    """`count` template digits (random variant, size, place), stored and given `status`."""
    rng = np.random.default_rng(seed)
    ids = []
    for i in range(count):
        digit = i % 10
        variant = str(rng.choice(template_variants(digit)))
        png = render_template_png(digit, variant, rng=rng, size=192)
        row, created = corrections.save_correction(
            image=png,
            media_type="image/png",
            image28=preprocess(png),
            label=digit,
            predicted=(digit + 1) % 10,
            confidence=0.6,
            probabilities=[0.1] * 10,
            model_version="test",
            client_predicted=None,
            client_model=None,
            client_hash="c" * 64,
        )
        if created:
            ids.append(row.pk)
    if status != Status.PENDING:
        corrections.set_status(ids, status)
    return ids


@pytest.fixture(scope="module")
def weak_weights(tmp_path_factory, mnist) -> Path:
    """A deliberately weak served model (a fresh network, a few steps on 768 MNIST images), so
    that fine-tuning has something to improve."""
    torch.manual_seed(3)
    fresh = build_model(FAST_ARCHITECTURE).state_dict()
    # A fresh network: no statistics or answers of its own worth keeping.
    config = FinetuneConfig(
        limit=768, lr=3e-3, device="cpu", seed=3, freeze_norm=False, distill=0.0
    )
    empty = Split(torch.zeros((0, 28, 28), dtype=torch.uint8), torch.zeros((0,), dtype=torch.long))
    result = finetune(fresh, model_config(FAST_ARCHITECTURE), mnist.train, empty, config)
    path = tmp_path_factory.mktemp("weak") / "weak.safetensors"
    # A not-a-digit threshold of its own, which a promoted candidate must have chosen again.
    rejection = {"score": "msp", "threshold": 0.5, "temperature": 1.0}
    save_weights(result.model, path, {"architecture": FAST_ARCHITECTURE, "rejection": rejection})
    return path


@pytest.fixture
def weights(tmp_path, weak_weights) -> Path:
    """A private copy of the weak model, as the served DIGITS_WEIGHTS."""
    path = tmp_path / "served" / "digits-cnn.safetensors"
    path.parent.mkdir()
    shutil.copy(weak_weights, path)
    shutil.copy(sidecar_path(weak_weights), sidecar_path(path))
    return path


# --- The gate: a pure function ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("candidate", "served", "train", "held", "promote", "says"),
    [
        (None, Scores(0.99, None), 0, 0, False, "no accepted corrections"),
        (None, Scores(0.99, None), 10, 0, False, "no held-out corrections"),
        (Scores(0.99 - MNIST_TOLERANCE - 1e-4, 1.0), Scores(0.99, 0.5), 10, 4, False, "fall"),
        (Scores(0.99 - MNIST_TOLERANCE, 1.0), Scores(0.99, 0.5), 10, 4, True, "better"),
        (Scores(0.995, 0.5), Scores(0.99, 0.5), 10, 4, False, "not better"),
        (Scores(0.995, 0.25), Scores(0.99, 0.5), 10, 4, False, "not better"),
        (Scores(0.995, 0.75), Scores(0.99, 0.5), 10, 4, True, "50.00% to 75.00%"),
    ],
)
def test_gate(candidate, served, train, held, promote, says):
    decision = gate(candidate, served, train, held)
    assert decision.promote is promote
    assert says in decision.reason


# --- retrain ------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_no_accepted_corrections_keeps_the_served_model(tmp_path, data_dir):
    store_drawings(5, Status.PENDING, seed=1)
    store_drawings(5, Status.REJECTED, seed=2)
    weights = tmp_path / "digits-cnn.safetensors"
    shutil.copy(shipped_weights(), weights)
    before = weights.read_bytes()
    lines, outcome = run("retrain", "--weights", str(weights), "--data-dir", str(data_dir), *QUICK)
    assert outcome["promoted"] is False
    assert "no accepted corrections" in outcome["reason"]
    assert outcome["candidate"] is None
    assert outcome["corrections"] == {"train": 0, "held_out": 0}
    assert outcome["model"] == outcome["served"]["version"] == load_weights(weights)[1]["version"]
    # Nothing to judge by, so nothing is evaluated: the figure the weights recorded.
    assert outcome["served"]["mnist_test"] == load_weights(weights)[1]["test_accuracy"]
    assert weights.read_bytes() == before
    assert modelstore.listing(weights) == []  # nothing stored (the lock's file may be there)
    assert any(line.startswith("Kept ") for line in lines)


@pytest.mark.django_db
def test_dry_run_trains_and_judges_but_never_writes(weights, data_dir):
    accepted = store_drawings(40, Status.ACCEPTED, seed=3)
    before = weights.read_bytes()
    lines, outcome = run(
        "retrain", "--weights", str(weights), "--data-dir", str(data_dir), "--dry-run", *QUICK
    )
    assert outcome["promoted"] is False
    assert sum(outcome["corrections"].values()) == len(accepted)
    assert outcome["corrections"]["held_out"] > 0
    assert 0 <= outcome["candidate"]["held_out"] <= 1
    assert outcome["candidate"]["version"] is None
    assert outcome["model"] == load_weights(weights)[1]["version"]
    assert weights.read_bytes() == before
    assert not modelstore.store_dir(weights).exists()
    assert any(line.startswith("step ") for line in lines)  # progress


@pytest.mark.django_db
def test_promotion_writes_the_weights_and_models_go_back(weights, data_dir):
    pending = store_drawings(6, Status.PENDING, seed=4)
    rejected = store_drawings(6, Status.REJECTED, seed=5)
    accepted = store_drawings(60, Status.ACCEPTED, seed=6)
    old = load_weights(weights)[1]["version"]

    _, outcome = run("retrain", "--weights", str(weights), "--data-dir", str(data_dir), *QUICK)
    assert outcome["promoted"] is True, outcome["reason"]
    assert outcome["candidate"]["held_out"] > outcome["served"]["held_out"]
    assert outcome["candidate"]["mnist_test"] >= outcome["served"]["mnist_test"] - MNIST_TOLERANCE
    new = outcome["model"]
    assert new == outcome["candidate"]["version"] != old

    _, metadata = load_weights(weights)  # the served file is the candidate now
    assert metadata["version"] == new and metadata["parent"] == old
    manifest = metadata["corrections"]
    trained, held = manifest["train"]["ids"], manifest["held_out"]["ids"]
    assert sorted(trained + held) == sorted(accepted)
    assert not set(trained + held) & set(pending + rejected)
    assert len(held) == outcome["corrections"]["held_out"] > 0
    assert metadata["training"]["epochs"] == 1 and metadata["training"]["limit"] == 1024
    rejection = Rejection.from_dict(metadata["rejection"])
    assert rejection.score == "msp" and rejection.threshold != 0.5

    lines, _ = run("models", "--weights", str(weights))
    versions = [line[2:].split()[0] for line in lines[1:]]
    assert sorted(versions) == sorted([old, new])
    assert [line[2:].split()[0] for line in lines if line.startswith("*")] == [new]
    assert old in next(line for line in lines if line.startswith("*"))  # the parent column

    run("models", "--weights", str(weights), "use", old)
    assert load_weights(weights)[1]["version"] == old
    lines, _ = run("models", "--weights", str(weights))
    assert any(line.startswith("*") and old in line for line in lines)

    with pytest.raises(CommandError, match="no stored model 'nope'"):
        run("models", "--weights", str(weights), "use", "nope")
    assert load_weights(weights)[1]["version"] == old


@pytest.mark.slow
def test_a_candidate_s_two_thresholds_are_chosen_again_on_real_digits(mnist, data_dir, tmp_path):
    """Served weights that judge a number's pieces apart get both thresholds chosen again, on
    the validation writers' pen digits when they are under --data-dir; without them, one."""
    import dataclasses

    from classifier.corrections.management.commands.retrain import Command
    from tests.ml.training.realdata import pen_digits

    pen_digits()  # skipped, saying where, when the pen digits are absent
    mnist = dataclasses.replace(mnist, validation=mnist.validation.head(500))
    torch.manual_seed(0)
    model = build_model(FAST_ARCHITECTURE).eval()
    served = {"rejection": {"score": "msp", "threshold": 0.9, "number_threshold": 0.5}}
    command = Command(stdout=io.StringIO())
    both = Rejection.from_dict(command._rejection(model, mnist, served, data_dir))
    assert both.number_threshold is not None and both.number_threshold <= both.threshold
    assert "writers' pen digits" in command.stdout.getvalue()
    alone = Rejection.from_dict(command._rejection(model, mnist, served, tmp_path))
    assert alone.number_threshold is None
    assert "not under --data-dir" in command.stdout.getvalue()
