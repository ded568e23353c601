"""The management commands, run as a user runs them (through Django's call_command)."""

from __future__ import annotations

import dataclasses
import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError
from PIL import Image

from classifier.management.commands.train import Command as TrainCommand
from classifier.management.commands.train_detector import Command as DetectorCommand
from classifier.ml.model import ModelConfig
from classifier.ml.training.config import TrainConfig
from classifier.ml.training.data import MNIST_FILES
from classifier.ml.training.detector import DetectorConfig
from classifier.ml.training.outliers import families_for
from classifier.ml.weights import load_weights, report_paths, save_weights, sidecar_path
from tests.helpers import SHIPPED_WEIGHTS


def run(*args: str) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO())
    return out.getvalue()


def evaluate_shipped(data_dir, *options: str) -> str:
    """`manage.py evaluate` of the shipped weights on the CPU, with more `options` (the real sets
    skipped unless asked for: tests/management/test_evaluate_real.py scores them)."""
    return run(
        "evaluate", "--weights", str(SHIPPED_WEIGHTS), "--data-dir", str(data_dir),
        "--device", "cpu", "--real-drawings", "0", *options,
    )  # fmt: skip


def test_evaluate_json_on_the_shipped_weights(data_dir):
    result = json.loads(evaluate_shipped(data_dir, "--outliers-per-family", "0", "--json"))
    assert result["accuracy"] >= 0.995
    assert "not_a_digit" not in result
    assert set(result["per_digit"]) == {str(d) for d in range(10)}
    assert min(result["per_digit"].values()) >= 0.98
    assert result["model"] == load_weights(SHIPPED_WEIGHTS)[1]["version"]
    assert result["count"] == 10_000


def test_evaluate_json_reports_what_the_threshold_rejects(data_dir):
    result = json.loads(
        evaluate_shipped(data_dir, "--outliers-per-family", "6", "--drawn", "100", "--json")
    )
    report = result["not_a_digit"]
    assert report["rejection"] == load_weights(SHIPPED_WEIGHTS)[1]["rejection"]
    assert report["counts"] == {
        "mnist": 10_000,
        "drawn": 100,
        "outliers": 6 * len(families_for("eval")),
    }
    assert report["mnist_rejected"] <= 0.01
    assert report["outliers_rejected"] >= 0.3
    assert set(report["families_rejected"]) == set(families_for("eval"))
    assert report["eval_letters_unseen"] is not shipped_learned_every_letter()
    assert 0.5 < report["auroc"] <= 1.0 and 0.0 <= report["fpr_at_95_tpr"] <= 1.0


def shipped_learned_every_letter() -> bool:
    return load_weights(SHIPPED_WEIGHTS)[1]["detector"].get("every_letter", False)


def test_evaluate_says_when_a_head_learned_the_letters_it_is_measured_on(data_dir, tmp_path):
    tensors, meta = load_weights(SHIPPED_WEIGHTS)
    for every_letter in (False, True):
        kept = {k: v for k, v in meta.items() if k not in ("version", "created", "format")}
        path = tmp_path / f"every-{every_letter}.safetensors"
        save_weights(
            tensors, path, {**kept, "detector": {**meta["detector"], "every_letter": every_letter}}
        )
        options = ("--weights", str(path), "--data-dir", str(data_dir), "--device", "cpu",
                   "--outliers-per-family", "2", "--drawn", "20",
                   "--real-drawings", "0")  # fmt: skip
        report = json.loads(run("evaluate", *options, "--json"))["not_a_digit"]
        assert report["eval_letters_unseen"] is not every_letter
        assert ("learned every letter" in run("evaluate", *options)) is every_letter


def test_evaluate_text(data_dir):
    text = evaluate_shipped(data_dir, "--outliers-per-family", "3", "--drawn", "50")
    assert "Test accuracy:" in text and "true\\pred" in text
    assert "AUROC" in text and "Rejected per family: scribble" in text


def test_evaluate_missing_weights(tmp_path, data_dir):
    with pytest.raises(CommandError, match="does not exist"):
        run(
            "evaluate", "--weights", str(tmp_path / "none.safetensors"), "--data-dir", str(data_dir)
        )


def test_evaluate_missing_data(tmp_path):
    with pytest.raises(CommandError) as info:
        run(
            "evaluate",
            "--weights",
            str(SHIPPED_WEIGHTS),
            "--data-dir",
            str(tmp_path),
            "--no-download",
        )
    assert all(name in str(info.value) for name in MNIST_FILES)


@pytest.mark.slow
def test_train_quick_run_writes_weights_and_report(data_dir, tmp_path):
    output = tmp_path / "quick.safetensors"
    text = run(
        "train",
        "--epochs",
        "1",
        "--limit",
        "2000",
        "--batch-size",
        "100",
        "--device",
        "cpu",
        "--data-dir",
        str(data_dir),
        "--output",
        str(output),
        "--no-progress",
    )
    assert "epoch 1:" in text and "images/s" in text
    assert "Test accuracy:" in text and "Per digit:" in text and "true\\pred" in text

    _, metadata = load_weights(output)
    assert metadata["train_images"] == 2000 and metadata["epochs"] == 1
    assert metadata["test_accuracy"] > 0.8
    assert metadata["data_checksum"].startswith("sha256:")
    # The file explains its run and rebuilds its network.
    assert metadata["model_args"] == ModelConfig(widths=(16, 32, 64)).as_dict()
    training = metadata["training"]
    assert (training["epochs"], training["batch_size"], training["limit"]) == (1, 100, 2000)
    assert training["lr"] == TrainConfig.lr and training["augmentation"]["rotation_deg"] > 0
    assert json.loads(sidecar_path(output).read_text())["version"] == metadata["version"]

    json_path, png_path = report_paths(output)
    report = json.loads(json_path.read_text())
    assert report["model"] == metadata["version"]
    assert report["test"]["accuracy"] == metadata["test_accuracy"]
    assert len(report["test"]["confusion"]) == 10 and len(report["history"]) == 1
    assert Image.open(png_path).format == "PNG"


def test_train_offline_without_data_stops_with_the_file_names(tmp_path):
    with pytest.raises(CommandError) as info:
        run(
            "train",
            "--data-dir",
            str(tmp_path),
            "--no-download",
            "--output",
            str(tmp_path / "w.safetensors"),
        )
    assert all(name in str(info.value) for name in MNIST_FILES)
    assert not (tmp_path / "w.safetensors").exists()


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--epochs", "0"),
        ("--batch-size", "0"),
        ("--limit", "0"),
        ("--lr", "-1"),
        ("--threads", "0"),
        ("--real-per-batch", "-1"),
        ("--styles-share", "2"),
    ],
)
def test_train_rejects_nonsense_options(tmp_path, option, value):
    with pytest.raises(CommandError, match=option):
        run("train", option, value, "--output", str(tmp_path / "w.safetensors"))


def test_train_has_one_option_per_config_field_with_its_default():
    """`manage.py train`'s options are generated from TrainConfig: every field is an option,
    each help states the field's default, and unchanged options give the default config."""
    command = TrainCommand()
    parser = command.create_parser("manage.py", "train")
    helps = {action.dest: action.help for action in parser._actions if action.dest != "help"}
    defaults = vars(parser.parse_args([]))
    for field in dataclasses.fields(TrainConfig):
        assert field.name in helps, field.name
        assert "(default: " in helps[field.name]
        if field.name != "device":  # chosen by DIGITS_DEVICE
            assert defaults[field.name] == field.default, field.name
    assert "(default: 8)" in helps["epochs"]
    assert "(default: none)" in helps["limit"]  # None is shown as none
    assert TrainConfig(
        **{f.name: defaults[f.name] for f in dataclasses.fields(TrainConfig)}
    ) == TrainConfig(device=defaults["device"])
    args = vars(parser.parse_args(["--real-per-batch", "32", "--limit", "5", "--lr", "0.01"]))
    assert (args["real_per_batch"], args["limit"], args["lr"]) == (32, 5, 0.01)


def test_train_detector_learns_every_letter_unless_told_to_measure() -> None:
    """The default head is the shipped recipe; `--no-every-letter` keeps a third unseen, and its
    help says what it does rather than "do not learn every letter"."""
    parser = DetectorCommand().create_parser("manage.py", "train_detector")
    helps = {action.dest: action.help for action in parser._actions}
    assert DetectorConfig().every_letter is True
    assert vars(parser.parse_args([]))["every_letter"] is True
    assert vars(parser.parse_args(["--no-every-letter"]))["every_letter"] is False
    assert helps["every_letter"].startswith("learn two thirds")
    assert "(default: every letter)" in helps["every_letter"]
