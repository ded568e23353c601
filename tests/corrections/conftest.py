"""Fixtures for the corrections tests: the database they run on (SQLite, and the real
PostgreSQL when it answers), and distinct drawings to store."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from classifier.corrections import store as corrections
from classifier.corrections.models import Correction
from tests.corrections import postgres

postgres.register()


@pytest.fixture(
    params=[
        "default",
        pytest.param(
            postgres.ALIAS,
            marks=pytest.mark.skipif(not postgres.AVAILABLE, reason=postgres.REASON or ""),
        ),
    ]
)
def using(request: pytest.FixtureRequest) -> str:
    """The database alias a test stores in: `default` (SQLite), then `postgres`."""
    return request.param


@pytest.fixture
def drawing() -> Callable[[int], np.ndarray]:
    """A 28x28 uint8 image of its own for each seed: different seeds, different hashes."""

    def make(seed: int) -> np.ndarray:
        return np.random.default_rng(seed).integers(0, 256, (28, 28), dtype=np.uint8)

    return make


@pytest.fixture
def store(
    using: str, drawing: Callable[[int], np.ndarray]
) -> Callable[..., tuple[Correction, bool]]:
    """save_correction on this test's database, with plausible defaults for what is not given;
    `seed` picks the drawing."""

    def save(seed: int = 0, **fields: Any) -> tuple[Correction, bool]:
        image28 = fields.pop("image28", None)
        if image28 is None:
            image28 = drawing(seed)
        probabilities = [0.01] * 10
        predicted = fields.get("predicted", 1)
        probabilities[predicted if predicted in range(10) else 0] = 0.91
        values: dict[str, Any] = {
            "image": corrections.png_bytes(drawing(seed).tobytes()),
            "media_type": "image/png",
            "image28": image28,
            "label": 7,
            "predicted": 1,
            "confidence": 0.91,
            "probabilities": probabilities,
            "model_version": "digits-cnn-test",
            "client_predicted": 1,
            "client_model": "digits-cnn-test",
            "client_hash": "a" * 64,
            "using": using,
            **fields,
        }
        return corrections.save_correction(**values)

    return save
