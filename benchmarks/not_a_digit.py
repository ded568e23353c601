"""How well each score tells digits from non-digits, on held-out drawings, model against model.

    .venv/bin/python -m benchmarks.not_a_digit --weights A.safetensors [--weights B ...]
        [--data-dir DIR] [--outliers-per-family 200] [--drawn 2000] [--threads 1] [--json PATH]
        [--kept PNG] [--trained-letters 200] [--max-rejected 0.002,0.004]

For each weights file, and for each score of its logits (maximum softmax probability; the same at
the temperature that fits the MNIST validation labels; the energy score) and, for weights with a
detector head (`classifier.ml.training.detector`), the head's logit, a threshold is chosen
on held-out digits only (`classifier.ml.training.calibration.choose_threshold`: MNIST validation
and canvas drawings of them, split "calibration"), then measured on the evaluation sets: MNIST test,
test digits drawn on the canvas, and generated non-digits of the "eval" split (other seeds, and a
third of every alphabet's letters that a head trained with `train_detector --no-every-letter`
never draws; weights trained with `--hold-out armenian,georgian,hebrew` never saw those
alphabets at all). Prints
a Markdown table of AUROC, FPR at 95% TPR and what each threshold rejects, then the share of
each family rejected. Weights that carry a threshold are also measured at it, as they serve.

`--trained-letters N` also measures, at each file's stored threshold, N new drawings per alphabet
of the two thirds of its letters that training draws (split "train", a seed no training pool
uses) beside N of the third it never draws: how far the head's knowledge of a letter carries to
new drawings of it, against how far it carries to letters it never saw.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from benchmarks import options
from classifier.ml.inference import Predictor
from classifier.ml.rejection import has_detector, logits_of, outputs_of
from classifier.ml.training.alphabets import SCRIPTS
from classifier.ml.training.calibration import (
    DRAWN_CALIBRATION_COUNT,
    DRAWN_MAX_REJECTED,
    EVAL_DRAWN_COUNT,
    EVAL_OUTLIERS_PER_FAMILY,
    MNIST_MAX_REJECTED,
    EvaluationSets,
    choose_threshold,
    evaluation_sets,
    fit_temperature,
    rejection_report,
)
from classifier.ml.training.data import load_mnist
from classifier.ml.training.outliers import (
    HELD_OUT_SCRIPTS,
    drawn_digits,
    families_for,
    make_outliers,
)

METHODS = (("msp", False), ("msp", True), ("energy", False))
KEPT_PER_ROW = 24
# The seed of --trained-letters' drawings: training pools use small seeds (train_detector: 1).
TRAINED_LETTERS_SEED = 977


def main() -> int:
    parser = options.parser(__doc__)
    options.add_weights(parser, "weights to compare", repeat=True)
    options.add_data_dir(parser)
    parser.add_argument(
        "--outliers-per-family",
        type=int,
        default=EVAL_OUTLIERS_PER_FAMILY,
        help=f"non-digits drawn per family (default: {EVAL_OUTLIERS_PER_FAMILY})",
    )
    parser.add_argument(
        "--drawn",
        type=int,
        default=EVAL_DRAWN_COUNT,
        help=f"MNIST test digits drawn on the canvas (default: {EVAL_DRAWN_COUNT})",
    )
    parser.add_argument(
        "--max-rejected",
        type=_shares,
        default=(MNIST_MAX_REJECTED, DRAWN_MAX_REJECTED),
        help="the threshold rule: the most of the calibration digits, MNIST and canvas, a chosen "
        f"threshold may reject (default: {MNIST_MAX_REJECTED},{DRAWN_MAX_REJECTED})",
    )
    options.add_threads(parser)
    parser.add_argument("--json", type=Path, help="also write the figures here (default: none)")
    parser.add_argument(
        "--kept",
        type=Path,
        help="also draw, to this PNG, letters of the held-out alphabets that the first weights "
        f"take for digits at their stored threshold ({KEPT_PER_ROW} per alphabet, a row each; "
        "default: none)",
    )
    parser.add_argument(
        "--trained-letters",
        type=int,
        default=0,
        help="also measure this many new drawings per alphabet of the letters training draws, "
        "beside as many of those it never draws (default: 0, off)",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    started = time.perf_counter()
    data = load_mnist(args.data_dir, download=False)
    validation = data.validation.images.numpy()
    calibration_drawn, _ = drawn_digits(
        validation[:DRAWN_CALIBRATION_COUNT],
        data.validation.labels[:DRAWN_CALIBRATION_COUNT].numpy(),
        "calibration",
    )
    sets = evaluation_sets(data.test, args.drawn, args.outliers_per_family)
    print(
        f"{len(sets.mnist)} MNIST test digits, {len(sets.drawn)} drawn digits, "
        f"{len(sets.outliers)} non-digits; made in {time.perf_counter() - started:.0f} s"
    )

    rows: list[dict[str, Any]] = []
    for path in options.weights_of(args):
        predictor = Predictor.load(path, device="cpu")
        model = predictor.model
        temperature = fit_temperature(logits_of(model, validation), data.validation.labels)
        methods = (*METHODS, ("detector", False)) if has_detector(model) else METHODS
        for score, scaled in methods:
            rejection = choose_threshold(
                model,
                validation,
                calibration_drawn,
                score=score,
                temperature=temperature if scaled else 1.0,
                mnist_max_rejected=args.max_rejected[0],
                drawn_max_rejected=args.max_rejected[1],
            )
            report = rejection_report(model, rejection, sets)
            name = f"{score} (T={temperature:.2f})" if scaled else score
            rows.append({"model": predictor.version, "method": name, **report})
        if predictor.rejection is not None:  # what the file serves, as it was calibrated then
            report = rejection_report(model, predictor.rejection, sets)
            name = f"{predictor.rejection.score}, as stored ({predictor.rejection.threshold:.2f})"
            rows.append({"model": predictor.version, "method": name, **report})

    print()
    print(
        "| model | score | AUROC | FPR at 95% TPR | MNIST test rejected | drawn digits rejected "
        "| non-digits rejected | MNIST right and kept | drawn right and kept |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['model']} | {row['method']} | {row['auroc']:.4f} "
            f"| {100 * row['fpr_at_95_tpr']:.1f}% | {100 * row['mnist_rejected']:.2f}% "
            f"| {100 * row['drawn_rejected']:.2f}% | {100 * row['outliers_rejected']:.1f}% "
            f"| {100 * row['mnist_answered_right']:.2f}% "
            f"| {100 * row['drawn_answered_right']:.2f}% |"
        )
    families = list(rows[0]["families_rejected"])
    print()
    print("| model | score | " + " | ".join(families) + " |")
    print("|---|---|" + "---|" * len(families))
    for row in rows:
        shares = " | ".join(f"{100 * row['families_rejected'][f]:.0f}%" for f in families)
        print(f"| {row['model']} | {row['method']} | {shares} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    if args.kept:
        draw_kept(Predictor.load(options.weights_of(args)[0], device="cpu"), sets, args.kept)
        print(f"\nKept letters drawn to {args.kept}")
    if args.trained_letters:
        print_trained_letters(options.weights_of(args), args.trained_letters)
    return 0


def _shares(text: str) -> tuple[float, float]:
    try:
        mnist, drawn = (float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected two shares, e.g. 0.002,0.004: {text!r}"
        ) from None
    if not (0 <= mnist < 1 and 0 <= drawn < 1):
        raise argparse.ArgumentTypeError(f"shares are between 0 and 1: {text!r}")
    return mnist, drawn


def trained_letters_rejected(
    predictor: Predictor, per_alphabet: int
) -> dict[str, tuple[float, float]]:
    """Per alphabet, the shares rejected at the stored threshold of new drawings of the letters
    training draws and of those it never draws."""
    alphabets = [f for f in families_for("eval") if f in SCRIPTS]
    count = per_alphabet * len(alphabets)
    rejection = predictor.rejection
    if rejection is None:
        raise ValueError(f"{predictor.version} has no stored threshold")
    shares = {}
    for split in ("train", "eval"):
        images, names = make_outliers(count, split, TRAINED_LETTERS_SEED, alphabets)
        rejected = ~rejection.is_digit(*outputs_of(predictor.model, images)).numpy()
        families = np.asarray(names)
        shares[split] = {a: float(rejected[families == a].mean()) for a in alphabets}
    return {a: (shares["train"][a], shares["eval"][a]) for a in alphabets}


def print_trained_letters(weights: list[Path], per_alphabet: int) -> None:
    for path in weights:
        predictor = Predictor.load(path, device="cpu")
        if predictor.rejection is None:
            continue
        shares = trained_letters_rejected(predictor, per_alphabet)
        print(
            f"\n{predictor.version}, as stored: rejected of {per_alphabet} new drawings per "
            "alphabet, of the letters training draws / of those it never draws"
        )
        detector = predictor.metadata.get("detector") or {}
        if detector.get("every_letter"):
            print("(it learned every letter: both columns are of letters it learned)")
        if detector.get("hold_out"):
            print(
                f"(held out of its training, both columns unseen for them: {detector['hold_out']})"
            )
        print("| alphabet | letters trained on | letters never drawn in training |")
        print("|---|---|---|")
        for alphabet, (trained, unseen) in shares.items():
            print(f"| {alphabet} | {100 * trained:.0f}% | {100 * unseen:.0f}% |")
        means = np.mean(list(shares.values()), axis=0)
        print(f"| mean | {100 * means[0]:.1f}% | {100 * means[1]:.1f}% |")


def draw_kept(predictor: Predictor, sets: EvaluationSets, path: Path) -> None:
    """A row per held-out alphabet of its evaluation letters that `predictor` takes for
    digits: what its threshold still lets through, seen as the model sees it (28x28)."""
    rows = []
    for family in HELD_OUT_SCRIPTS:
        images = sets.outliers[np.asarray(sets.families) == family]
        rejection = predictor.rejection
        kept = (
            images
            if rejection is None
            else images[rejection.is_digit(*outputs_of(predictor.model, images)).numpy()]
        )
        row = np.full((28, KEPT_PER_ROW * 30), 128, np.uint8)
        for index, image in enumerate(kept[:KEPT_PER_ROW]):
            row[:, index * 30 : index * 30 + 28] = image
        rows.append(row)
    grid = np.concatenate(rows)
    Image.fromarray(grid).resize(
        (grid.shape[1] * 2, grid.shape[0] * 2), Image.Resampling.NEAREST
    ).save(path)


if __name__ == "__main__":
    raise SystemExit(main())
