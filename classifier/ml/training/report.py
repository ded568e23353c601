"""What a training run reached, for people: a JSON report and a PNG beside the weights.

The JSON holds the figures (test accuracy, per-digit accuracy, confusion matrix, the learning
curves); the PNG draws the learning curves and the confusion matrix.
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from pathlib import Path

from classifier.ml.training.train import Evaluation, TrainResult
from classifier.ml.weights import atomic_write, report_paths


def per_digit_dict(per_digit: list[float]) -> dict[str, float]:
    return {str(digit): round(value, 6) for digit, value in enumerate(per_digit)}


def format_confusion(confusion: list[list[int]]) -> str:
    """The confusion matrix as a text table: rows are true digits, columns predictions."""
    header = "true\\pred " + " ".join(f"{d:>5}" for d in range(len(confusion)))
    rows = [f"{t:>9} " + " ".join(f"{v:>5}" for v in row) for t, row in enumerate(confusion)]
    return "\n".join([header, *rows])


def build_report(result: TrainResult, test: Evaluation, metadata: dict) -> dict:
    return {
        "model": metadata.get("version"),
        "architecture": metadata.get("architecture"),
        "test": {
            "accuracy": test.accuracy,
            "loss": test.loss,
            "count": test.count,
            "per_digit": per_digit_dict(test.per_digit),
            "confusion": test.confusion,
        },
        "best_epoch": result.best_epoch,
        "train_seconds": round(result.seconds, 2),
        "device": result.device,
        "config": asdict(result.config),
        "history": [asdict(epoch) for epoch in result.history],
        "data_checksum": metadata.get("data_checksum"),
    }


def write_report(weights_path: Path | str, report: dict) -> tuple[Path, Path]:
    """Write the JSON report and its PNG beside the weights; returns both paths."""
    json_path, png_path = report_paths(weights_path)
    atomic_write(json_path, (json.dumps(report, indent=2) + "\n").encode())
    atomic_write(png_path, plot_report(report))
    return json_path, png_path


def plot_report(report: dict) -> bytes:
    """PNG: loss and accuracy per epoch (train and validation), and the test confusion matrix."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    history = report["history"]
    epochs = [h["epoch"] for h in history]
    figure, (loss_ax, acc_ax, conf_ax) = plt.subplots(1, 3, figsize=(16, 4.8))
    loss_ax.plot(epochs, [h["train_loss"] for h in history], "o-", label="train")
    loss_ax.plot(epochs, [h["val_loss"] for h in history], "o-", label="validation")
    loss_ax.set(title="Loss", xlabel="epoch", yscale="log")
    loss_ax.legend()
    acc_ax.plot(
        epochs, [100 * h["train_accuracy"] for h in history], "o-", label="train (augmented)"
    )
    acc_ax.plot(epochs, [100 * h["val_accuracy"] for h in history], "o-", label="validation")
    acc_ax.axhline(100 * report["test"]["accuracy"], color="grey", ls="--", label="test (final)")
    acc_ax.set(title="Accuracy (%)", xlabel="epoch")
    acc_ax.legend()

    confusion = report["test"]["confusion"]
    # Only errors are coloured: the diagonal would otherwise wash every error out.
    shown = [[(v if t != p else 0) for p, v in enumerate(row)] for t, row in enumerate(confusion)]
    conf_ax.imshow(shown, cmap="Reds")
    darkest = max(max(row) for row in shown) or 1
    for t, row in enumerate(confusion):
        for p, value in enumerate(row):
            colour = "tab:blue" if t == p else "white" if value > 0.6 * darkest else "black"
            conf_ax.text(p, t, str(value), ha="center", va="center", fontsize=7, color=colour)
    conf_ax.set(
        title=f"Test confusion ({100 * report['test']['accuracy']:.2f}% correct)",
        xlabel="predicted",
        ylabel="true",
        xticks=range(10),
        yticks=range(10),
    )
    figure.suptitle(f"{report.get('model')}")
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90)
    plt.close(figure)
    return buffer.getvalue()
