"""Model changes are never silent: `train` stores a new version and serves it only with `--serve`,
when nothing is served, or when it passes retrain's gate; `models use` rolls back; and the
serving lock lets one `retrain`, `train --serve` or `models use` at a time change the served
model, and is never left held by a killed process. Real processes, a real PostgreSQL (to hold a
`retrain` mid-run, deterministically) and MNIST; no mocks.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import torch
from django.core.management import call_command
from django.core.management.base import CommandError

from classifier.corrections.models import Status
from classifier.ml import modelstore
from classifier.ml.model import FAST_ARCHITECTURE, build_model
from classifier.ml.modellock import LockHeld, lock_path, serving_lock
from classifier.ml.weights import (
    load_weights,
    report_paths,
    save_weights,
    sidecar_path,
    weights_digest,
)
from tests.corrections import postgres
from tests.corrections.test_retrain import store_drawings
from tests.helpers import REPO, shipped_weights

# A tiny training run: one epoch over the first 1,000 MNIST images (a model of no use).
TINY = ("--epochs", "1", "--limit", "1000", "--batch-size", "100", "--device", "cpu")
# Enough steps for a model that reads most digits (about 90% of MNIST test).
SHORT = ("--epochs", "1", "--limit", "2000", "--batch-size", "50", "--device", "cpu")


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def served_copy(tmp_path: Path, source: Path) -> Path:
    """A private served weights path holding `source` (and its sidecar)."""
    path = tmp_path / "served" / "digits-cnn.safetensors"
    path.parent.mkdir(parents=True)
    shutil.copy(source, path)
    shutil.copy(sidecar_path(source), sidecar_path(path))
    return path


def version(path: Path) -> str:
    return load_weights(path)[1]["version"]


def stored_versions(weights: Path) -> set[str]:
    return {m.version for m in modelstore.listing(weights)}


def hold_lock(weights: Path) -> subprocess.Popen[str]:
    """Another process holding the serving lock of `weights` until it is killed."""
    code = (
        "import sys, time\n"
        "from classifier.ml.modellock import serving_lock\n"
        "with serving_lock(sys.argv[1], 'a test holding it'):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(600)\n"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", code, str(weights)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


# --- The lock and the store, without training ---------------------------------------------------


def test_the_lock_refuses_a_second_holder_and_dies_with_its_process(tmp_path):
    weights = tmp_path / "digits-cnn.safetensors"
    holder = hold_lock(weights)
    try:
        with pytest.raises(LockHeld) as info, serving_lock(weights, "second"):
            pass
        assert info.value.path == lock_path(weights)
        assert f"held by pid {holder.pid}, a test holding it" in str(info.value)
    finally:
        holder.kill()  # SIGKILL: no cleanup runs in the holder
        holder.wait()
    with serving_lock(weights, "after the kill") as path:  # the kernel released it
        assert "after the kill" in path.read_text()
    assert path.read_text() == ""  # released: no holder named


@pytest.mark.django_db
def test_models_use_and_train_serve_refuse_while_the_lock_is_held(tmp_path, data_dir):
    weights = served_copy(tmp_path, shipped_weights())
    before = weights.read_bytes()
    holder = hold_lock(weights)
    try:
        with pytest.raises(CommandError, match=r"models use: .*serving\.lock.*held by pid"):
            run("models", "--weights", str(weights), "use", version(weights))
        # Refused before any training: the lock is taken first.
        with pytest.raises(CommandError, match=rf"train --serve: .*{lock_path(weights)}"):
            run("train", "--serve", "--output", str(weights), "--data-dir", str(data_dir), *TINY)
    finally:
        holder.kill()
        holder.wait()
    assert weights.read_bytes() == before
    assert stored_versions(weights) == set()


def _state(seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return build_model(FAST_ARCHITECTURE).state_dict()


def test_stores_at_once_never_share_a_staging_file(tmp_path):
    weights = tmp_path / "digits-cnn.safetensors"
    states = [_state(seed) for seed in range(8)]
    stored: list[modelstore.StoredModel] = []
    errors: list[BaseException] = []

    def add(state: dict[str, torch.Tensor]) -> None:
        try:
            stored.append(modelstore.add(weights, state, {"architecture": FAST_ARCHITECTURE}))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(state,)) for state in states]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert len({m.version for m in stored}) == len(states)
    for model in stored:  # each file holds the weights its version names
        tensors, metadata = load_weights(model.path)
        assert metadata["version"] == model.version
        assert model.version.endswith(weights_digest(tensors)[:8])
    assert not list(modelstore.store_dir(weights).glob(".new*"))


# --- train --------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db
def test_train_without_serve_keeps_the_served_model_and_models_use_rolls_back(tmp_path, data_dir):
    weights = served_copy(tmp_path, shipped_weights())
    before, old = weights.read_bytes(), version(weights)

    text = run("train", "--output", str(weights), "--data-dir", str(data_dir), *TINY)
    assert weights.read_bytes() == before  # the served model, byte for byte
    (new,) = stored_versions(weights) - {old}
    assert f"Kept the served model {old}" in text and "no accepted corrections" in text
    assert f"models use {new}" in text
    report, _ = report_paths(modelstore.stored_path(weights, new))
    assert report.is_file()  # the report is stored beside the new model

    run("models", "--weights", str(weights), "use", new)
    assert version(weights) == new
    assert stored_versions(weights) == {old, new}  # the replaced one was kept

    run("models", "--weights", str(weights), "use", old)  # the rollback
    assert weights.read_bytes() == before
    listing = run("models", "--weights", str(weights)).splitlines()
    assert [line.split()[1] for line in listing if line.startswith("*")] == [old]


@pytest.mark.slow
@pytest.mark.django_db
def test_train_serve_serves_and_keeps_the_old_one(tmp_path, data_dir):
    weights = served_copy(tmp_path, shipped_weights())
    old = version(weights)
    text = run("train", "--serve", "--output", str(weights), "--data-dir", str(data_dir), *TINY)
    new = version(weights)
    assert new != old and f"Serving {new}" in text and "(--serve)" in text
    assert stored_versions(weights) == {old, new}
    assert report_paths(weights)[0].is_file()
    assert lock_path(weights).read_text() == ""  # released


@pytest.mark.slow
@pytest.mark.django_db
def test_train_serves_a_model_that_passes_the_gate(tmp_path, data_dir):
    # An untrained network is served; a tiny run beats it on MNIST and on held-out corrections.
    untrained = tmp_path / "untrained.safetensors"
    save_weights(_state(5), untrained, {"architecture": FAST_ARCHITECTURE})
    weights = served_copy(tmp_path, untrained)
    old = version(weights)
    store_drawings(40, Status.ACCEPTED, seed=11)
    text = run("train", "--output", str(weights), "--data-dir", str(data_dir), *SHORT)
    new = version(weights)
    assert new != old, text
    assert "it passed the promotion gate: better on the" in text
    assert stored_versions(weights) == {old, new}


# --- Two retrains at once -------------------------------------------------------------------


@pytest.fixture
def blocking_database() -> Iterator[tuple[str, psycopg.Connection]]:
    """A migrated PostgreSQL database of this test's own, and a connection holding an exclusive
    lock on its corrections table: a `retrain` reading from it waits until the lock goes."""
    if not postgres.AVAILABLE:
        pytest.skip(postgres.REASON)
    name = f"digits_lock_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin = psycopg.connect(postgres.URL, autocommit=True)
    admin.execute(f'CREATE DATABASE "{name}"')
    url = postgres.URL.rsplit("/", 1)[0] + "/" + name
    try:
        env = {**os.environ, "DATABASE_URL": url}
        migrate = [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"]
        subprocess.run(migrate, cwd=REPO, env=env, check=True, timeout=300)
        blocker = psycopg.connect(url)
        blocker.execute("LOCK TABLE corrections_correction IN ACCESS EXCLUSIVE MODE")
        try:
            yield url, blocker
        finally:
            blocker.close()
    finally:
        admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        admin.close()


@pytest.mark.slow
@pytest.mark.django_db
def test_two_retrains_at_once_the_second_exits_naming_the_lock(
    tmp_path, data_dir, blocking_database
):
    url, _blocker = blocking_database
    weights = served_copy(tmp_path, shipped_weights())
    before = weights.read_bytes()
    first = subprocess.Popen(
        [sys.executable, "manage.py", "retrain", "--weights", str(weights),
         "--data-dir", str(data_dir), "--device", "cpu"],
        cwd=REPO, env={**os.environ, "DATABASE_URL": url},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while f"pid {first.pid}" not in _read(lock_path(weights)):
            assert first.poll() is None, first.stdout.read()
            assert time.monotonic() < deadline, "the first retrain never took the lock"
            time.sleep(0.1)
        # The first holds the lock and waits on the corrections table: it cannot finish.
        with pytest.raises(CommandError) as info:
            run("retrain", "--weights", str(weights), "--data-dir", str(data_dir))
        message = str(info.value)
        assert message.startswith("retrain: another process is changing the served model")
        assert str(lock_path(weights)) in message
        assert f"held by pid {first.pid}, manage.py retrain" in message
        assert first.poll() is None
    finally:
        first.kill()  # SIGKILL mid-run: it can leave nothing held
        first.wait()
    text = run("retrain", "--weights", str(weights), "--data-dir", str(data_dir))
    assert "no accepted corrections" in text
    assert weights.read_bytes() == before


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""
