"""Accuracy on digits as people send them: drawn on a canvas, and as small bitmaps.

    .venv/bin/python -m benchmarks.canvas_accuracy [--weights PATH] [--count 2000] [--seed 0]

Canvas set: MNIST test digits thinned to their skeletons and redrawn with a round brush around
the page's width, at a random size and place on a 384x384 canvas, in the page's colours and
others (classifier/ml/training/canvas.py). Bitmap set: MNIST test digits as black-on-white PNGs of
16 to 64 pixels, as other clients send them. Templates: hand-drawn stroke templates in several
writing styles, at random sizes, places and slants. Every image goes through the service's own path,
PNG bytes -> `preprocess` -> `Predictor`, and the same digits straight from MNIST are scored
for comparison.
"""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from benchmarks import options
from classifier.ml.brush import STYLES
from classifier.ml.inference import Predictor
from classifier.ml.preprocessing import preprocess
from classifier.ml.training.canvas import (
    CANVAS_SIZE,
    STYLE_WEIGHTS,
    TEMPLATES,
    random_placement,
    render_bitmap_png,
    render_canvas_png,
    render_template_png,
)
from classifier.ml.training.data import load_test_split


def accuracy_line(name: str, correct: int, total: int) -> str:
    return f"{name:<34} {100 * correct / max(total, 1):6.2f}%  ({correct}/{total})"


def predict(predictor: Predictor, images: list[np.ndarray]) -> np.ndarray:
    predictions = []
    for start in range(0, len(images), 512):
        batch = np.stack(images[start : start + 512])
        predictions.append(predictor.predict_proba(batch).argmax(axis=1))
    return np.concatenate(predictions)


def main() -> int:
    parser = options.parser(__doc__)
    options.add_weights(parser)
    options.add_data_dir(parser)
    parser.add_argument(
        "--count",
        type=int,
        default=2000,
        help="test digits to draw, spread evenly over the test set (default: 2000)",
    )
    parser.add_argument(
        "--templates",
        type=int,
        default=20,
        help="random drawings of each template variant (default: 20)",
    )
    options.add_seed(parser)
    options.add_device(parser)
    parser.add_argument(
        "--show-errors",
        type=Path,
        default=None,
        help="save the misread canvas digits as a PNG sheet here (default: no)",
    )
    args = parser.parse_args()

    started = time.perf_counter()
    predictor = Predictor.load(args.weights, device=args.device)
    test = load_test_split(args.data_dir, download=False)
    rng = np.random.default_rng(args.seed)
    chosen = np.linspace(0, len(test) - 1, min(args.count, len(test))).round().astype(int)
    digits = test.images[chosen].numpy()
    labels = test.labels[chosen].numpy()
    print(f"model {predictor.version}; {len(chosen)} test digits; seed {args.seed}")

    # Canvas drawings, with what each was drawn like.
    inputs, kinds = [], []
    for image in digits:
        style = str(rng.choice(STYLES, p=STYLE_WEIGHTS))
        placement = random_placement(rng)
        png = render_canvas_png(image, rng, style=style, placement=placement)
        inputs.append(preprocess(png))
        relative = placement.brush / placement.height
        kinds.append(
            {
                "style": style,
                "size": "small (<45% of canvas)"
                if placement.height < 0.45 * CANVAS_SIZE
                else "large (>=45% of canvas)",
                "brush": "thick brush (>=12% of height)" if relative >= 0.12 else "thin brush",
            }
        )
    canvas_predictions = predict(predictor, inputs)
    canvas_correct = canvas_predictions == labels

    bitmaps = [
        preprocess(render_bitmap_png(image, size=int(rng.integers(16, 65)))) for image in digits
    ]
    bitmap_correct = predict(predictor, bitmaps) == labels
    plain_correct = predictor.predict_proba(digits).argmax(axis=1) == labels

    template_truth, template_inputs = [], []
    for digit, variants in TEMPLATES.items():
        for variant in variants:
            for _ in range(args.templates):
                png = render_template_png(digit, variant, rng=rng, style="page")
                template_inputs.append(preprocess(png))
                template_truth.append((digit, variant))
    template_predictions = predict(predictor, template_inputs)

    print()
    print(accuracy_line("MNIST test digits as they are", plain_correct.sum(), len(labels)))
    print(accuracy_line("small black-on-white bitmaps", bitmap_correct.sum(), len(labels)))
    print(accuracy_line("CANVAS DRAWINGS (target >= 97%)", canvas_correct.sum(), len(labels)))
    for key in ("style", "size", "brush"):
        groups: dict[str, list[bool]] = defaultdict(list)
        for kind, correct in zip(kinds, canvas_correct, strict=True):
            groups[kind[key]].append(bool(correct))
        for name, values in sorted(groups.items()):
            print(accuracy_line(f"  canvas, {name}", sum(values), len(values)))
    by_template: dict[str, list[bool]] = defaultdict(list)
    for (digit, variant), predicted in zip(template_truth, template_predictions, strict=True):
        by_template[f"{digit} {variant}"].append(bool(predicted == digit))
    total = sum(len(v) for v in by_template.values())
    print(accuracy_line("writing-style templates", sum(map(sum, by_template.values())), total))
    for name, values in by_template.items():
        if sum(values) < len(values):
            print(accuracy_line(f"  template {name}", sum(values), len(values)))
    confusions: dict[tuple[int, int], int] = defaultdict(int)
    for truth, predicted in zip(labels, canvas_predictions, strict=True):
        if truth != predicted:
            confusions[(int(truth), int(predicted))] += 1
    worst = sorted(confusions.items(), key=lambda item: -item[1])[:6]
    print(
        "most common canvas errors (true->predicted: count): "
        + ", ".join(f"{t}->{p}: {n}" for (t, p), n in worst)
    )
    print(f"took {time.perf_counter() - started:.0f} s")

    if args.show_errors:
        from PIL import Image

        wrong = np.flatnonzero(~canvas_correct)[:96]
        sheet = Image.new("L", (28 * 12, 28 * max(1, -(-len(wrong) // 12))))
        for k, index in enumerate(wrong):
            sheet.paste(Image.fromarray(inputs[index]), (28 * (k % 12), 28 * (k // 12)))
        sheet.resize((sheet.width * 3, sheet.height * 3)).save(args.show_errors)
        print(f"misread canvas digits: {args.show_errors}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
