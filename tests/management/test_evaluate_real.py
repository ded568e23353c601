"""`manage.py evaluate` on the real sets: per class, per writer, turned away; absent sets said."""

from __future__ import annotations

import json

import pytest

from classifier.ml.training.drawings import styles
from tests.helpers import SHIPPED_WEIGHTS
from tests.management.test_commands import run
from tests.ml.training.realdata import pen_digits


def evaluate(data_dir, *options: str) -> str:
    return run(
        "evaluate", "--weights", str(SHIPPED_WEIGHTS), "--data-dir", str(data_dir),
        "--device", "cpu", "--outliers-per-family", "0", *options,
    )  # fmt: skip


@pytest.mark.slow  # evaluate scores MNIST first
def test_evaluate_json_reports_every_real_set(data_dir):
    pen_digits()  # skipped, saying where, when the shared sets are absent
    result = json.loads(evaluate(data_dir, "--real-drawings", "60", "--json"))
    assert result["accuracy"] >= 0.995  # the existing output is kept
    mnist = result["mnist"]
    assert set(mnist["per_class"]) == {str(d) for d in range(10)}
    assert 0.99 <= mnist["kept_and_right"] <= result["accuracy"] and mnist["turned_away"] < 0.01
    real = result["real_sets"]
    assert list(real) == ["pendigits", "styles", "quickdraw", "symbols"]
    for name in ("pendigits", "styles"):
        assert real[name]["count"] == 60 and set(real[name]["ways"]) == {"ink", "png", "bitmap"}
    pen = real["pendigits"]["ways"]["ink"]
    assert pen["count"] == 60 and len(pen["worst_writers"]) == 5
    assert set(pen["per_class"]) <= {str(d) for d in range(10)}
    assert 0.8 <= pen["kept_and_right"] <= pen["accuracy"] <= 1.0
    assert set(real["styles"]["ways"]["png"]["per_style"]) <= set(styles.STYLES)
    doodles = real["quickdraw"]["ways"]["ink"]
    assert 0.4 <= doodles["turned_away"] <= 1.0 and len(doodles["most_kept"]) == 10
    assert "CC BY 4.0" in real["quickdraw"]["licence"] and "MIT" in real["symbols"]["licence"]


@pytest.mark.slow  # evaluate scores MNIST first
def test_evaluate_says_which_real_sets_are_absent(data_dir, tmp_path):
    (tmp_path / "MNIST").symlink_to(data_dir / "MNIST")  # MNIST only
    result = json.loads(evaluate(tmp_path, "--json"))
    assert result["real_sets"]["symbols"] == {"absent": True, "source": str(tmp_path / "symbols")}
    assert all(one["absent"] for one in result["real_sets"].values())
    text = evaluate(tmp_path, "--real-drawings", "0")
    assert "Kept and right:" in text and "Drawings by people" not in text


@pytest.mark.slow  # evaluate scores MNIST first
def test_evaluate_text_names_the_worst_writers(data_dir):
    pen_digits()
    text = evaluate(data_dir, "--real-drawings", "30")
    assert "Test accuracy:" in text and "Drawings by people" in text
    assert "pendigits as ink (30 drawings)" in text and "worst writers" in text
    assert "quickdraw as png" in text and "look-alikes kept" in text
    assert "symbols as ink" in text
