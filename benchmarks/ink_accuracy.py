"""Digits sent as ink against the same drawings sent as the page's PNG, on held-out writers.

    .venv/bin/python -m benchmarks.ink_accuracy [--weights PATH] [--data-dir DIR]
        [--writers 11-30] [--seed 0] [--device cpu] [--threads 1] [--sweep]

The pen digits (../shared/datasets/pendigits, 30 writers the shipped model never saw) go through
the service's ML path with the shipped weights both ways: (a) drawn as the page draws them (at a
random size and place on its 192x192 pad, brush 6.5% of its height; `canvas.render_page_png`),
then decoded and preprocessed as a worker does a PNG (`preprocess`); (b) as ink, through
`rasterize`. For both: accuracy, kept and right (the model's `is_digit`), the share turned away,
each class, the worst writers, the time per drawing (PNG decode + preprocess, the PNG's encoding
excluded, against rasterize, one at a time and in batches of 64), and the bytes of each as a
predict frame carries it (the ink as JSON lists, 1 decimal, with times at the tablet's rate;
the PNG as a base64 data URL). The rasterizer's pen width was chosen with `--sweep` on writers
1-10, so the figures on 11-30 are not tuned on what they report.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from benchmarks import options
from classifier.ml import rasterizer
from classifier.ml.inference import Predictor
from classifier.ml.ink import Ink, to_lists
from classifier.ml.preprocessing import preprocess
from classifier.ml.training.canvas import PAGE_EXPORT_SIZE, draw_page, page_ink, to_png
from classifier.ml.training.drawings import pendigits

DEFAULT_WRITERS = "11-30"
TIMING_BATCH = 64
# The pen widths and edges `--sweep` tries, in output pixels (MNIST's strokes are 2-3 pixels).
SWEEP_WIDTHS = (1.6, 2.0, 2.2, 2.4, 2.6, 2.8, 3.2)
SWEEP_FEATHERS = (1.0, 1.5, 2.0, 2.5)
WORST_WRITERS = 5


@dataclass(frozen=True)
class Drawing:
    """One digit as the page would have it: the ink on the pad, and the PNG of the same."""

    label: int
    writer: int
    ink: Ink  # in the pad's pixels, with times
    png: bytes


@dataclass(frozen=True)
class Way:
    """What one way of sending gave: the model's input, its verdicts, its cost."""

    images: np.ndarray
    predicted: np.ndarray
    is_digit: np.ndarray
    ms_per_drawing: float
    bytes_per_frame: float


def parse_writers(text: str) -> set[int]:
    """ "11-30" or "1-10,15": the writers to read."""
    chosen: set[int] = set()
    try:
        for part in text.split(","):
            low, _, high = part.partition("-")
            chosen.update(range(int(low), int(high or low) + 1))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of writers like 11-30") from None
    return chosen


def make_drawings(
    digits: Sequence[pendigits.PenDigit], seed: int = 0, size: int = PAGE_EXPORT_SIZE
) -> list[Drawing]:
    """Each digit placed on the pad as a person draws (a random size and place), both ways."""
    rng = np.random.default_rng(seed)
    drawings = []
    for digit in digits:
        ink = page_ink(pendigits.with_times(digit.ink), size, size, rng=rng)
        png = to_png(draw_page(ink, size, size))
        drawings.append(Drawing(digit.label, digit.writer, ink, png))
    return drawings


def ink_frame(ink: Ink) -> str:
    return json.dumps({"type": "predict", "id": "1", "ink": to_lists(ink)}, separators=(",", ":"))


def png_frame(png: bytes) -> str:
    url = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return json.dumps({"type": "predict", "id": "1", "image": url}, separators=(",", ":"))


def timed_per_drawing(work, items: Sequence, chunk: int = TIMING_BATCH) -> tuple[list, float]:
    """`work` over `items` in chunks: the results, and the median chunk's ms per item (the
    median, not the mean: the machine is shared, a slow chunk says more about it than us)."""
    results, per_item = [], []
    for start in range(0, len(items), chunk):
        part = items[start : start + chunk]
        began = time.perf_counter()
        results.extend(work(part))
        per_item.append(1000 * (time.perf_counter() - began) / len(part))
    return results, statistics.median(per_item)


def score(predictor: Predictor, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    predicted, kept = [], []
    for start in range(0, len(images), 512):
        scored = predictor.predict_scored(images[start : start + 512])
        predicted.append(scored.probabilities.argmax(axis=1))
        kept.append(scored.is_digit)
    return np.concatenate(predicted), np.concatenate(kept)


def send_both_ways(
    predictor: Predictor, drawings: Sequence[Drawing], device: str = "cpu"
) -> dict[str, Way]:
    """Every drawing as PNG and as ink through the service's ML path: the verdicts, the cost."""
    pngs = [d.png for d in drawings]
    inks = [d.ink for d in drawings]
    png_images, png_ms = timed_per_drawing(lambda part: [preprocess(b) for b in part], pngs)
    ink_images, batch_ms = timed_per_drawing(
        lambda part: list(rasterizer.rasterize(part, device=device)), inks
    )
    _, single_ms = timed_per_drawing(
        lambda part: [rasterizer.rasterize([ink], device=device)[0] for ink in part], inks
    )
    ways = {}
    for name, images, ms, frames in (
        ("png", np.stack(png_images), png_ms, [png_frame(b) for b in pngs]),
        ("ink", np.stack(ink_images), single_ms, [ink_frame(i) for i in inks]),
    ):
        predicted, kept = score(predictor, images)
        size = float(np.mean([len(f.encode()) for f in frames]))
        ways[name] = Way(images, predicted, kept, ms, size)
    ways["ink, batches"] = Way(
        ways["ink"].images, ways["ink"].predicted, ways["ink"].is_digit, batch_ms, 0.0
    )
    return ways


def shares(way: Way, labels: np.ndarray, where: np.ndarray | None = None) -> tuple[float, ...]:
    """Percent right, kept and right, and turned away (of the drawings `where` is true)."""
    where = np.ones(len(labels), dtype=bool) if where is None else where
    right = way.predicted[where] == labels[where]
    kept = way.is_digit[where]
    return (
        100 * float(right.mean()),
        100 * float((right & kept).mean()),
        100 * float((~kept).mean()),
    )


def report(ways: dict[str, Way], drawings: Sequence[Drawing]) -> list[str]:
    labels = np.array([d.label for d in drawings])
    writers = np.array([d.writer for d in drawings])
    png, ink = ways["png"], ways["ink"]
    lines = [f"{'':<24}{'right':>8}{'kept+right':>12}{'turned away':>13}{'ms/drawing':>12}"]
    for name, way in (("PNG (decode+preprocess)", png), ("ink (rasterize, one)", ink)):
        right, kept, away = shares(way, labels)
        lines.append(f"{name:<24}{right:7.2f}%{kept:11.2f}%{away:12.2f}%{way.ms_per_drawing:12.3f}")
    lines.append(f"{'ink (rasterize, 64s)':<24}{'':>33}{ways['ink, batches'].ms_per_drawing:12.3f}")
    gap = shares(ink, labels)[1] - shares(png, labels)[1]
    lines.append(f"ink minus PNG, kept and right: {gap:+.2f} points (done when >= -0.3)")
    lines.append(
        f"bytes per predict frame: PNG {png.bytes_per_frame:,.0f}, ink {ink.bytes_per_frame:,.0f} "
        f"({ink.bytes_per_frame / png.bytes_per_frame:.2f} of the PNG's)"
    )
    lines.append("kept and right per class:  " + "".join(f"{c:>7}" for c in range(10)))
    for name, way in (("PNG", png), ("ink", ink)):
        per_class = [shares(way, labels, labels == c)[1] for c in range(10)]
        lines.append(f"  {name:<24}" + "".join(f"{p:7.1f}" for p in per_class))
    by_writer = {w: shares(ink, labels, writers == w)[1] for w in np.unique(writers).tolist()}
    worst = sorted(by_writer, key=lambda w: by_writer[w])[:WORST_WRITERS]
    lines.append(
        "worst writers, kept and right (ink / PNG): "
        + ", ".join(
            f"{w}: {by_writer[w]:.1f} / {shares(png, labels, writers == w)[1]:.1f}" for w in worst
        )
    )
    return lines


def sweep(predictor: Predictor, drawings: Sequence[Drawing]) -> list[str]:
    """Kept and right for each pen width and edge: how `STROKE_WIDTH` and `FEATHER` were picked."""
    labels = np.array([d.label for d in drawings])
    inks = [d.ink for d in drawings]
    lines = ["kept and right by pen width (rows) and edge (columns), output pixels:"]
    lines.append(f"{'':>8}" + "".join(f"{f:>9}" for f in SWEEP_FEATHERS))
    for width in SWEEP_WIDTHS:
        row = []
        for feather in SWEEP_FEATHERS:
            images = rasterizer.rasterize(inks, width=width, feather=feather)
            predicted, kept = score(predictor, images)
            row.append(100 * float(((predicted == labels) & kept).mean()))
        lines.append(f"{width:>8}" + "".join(f"{v:8.2f}%" for v in row))
    return lines


def main() -> int:
    parser = options.parser(__doc__)
    options.add_weights(parser)
    options.add_data_dir(parser, "folder holding pendigits/pendigits-orig.tra")
    parser.add_argument(
        "--writers",
        type=parse_writers,
        default=parse_writers(DEFAULT_WRITERS),
        help=f"pen digits' writers to read, e.g. 11-30 or 1-10,15 (default: {DEFAULT_WRITERS})",
    )
    options.add_seed(parser, what="seed of the drawings' sizes and places")
    options.add_device(parser, what="where the model and the rasterizer run: cpu or cuda")
    options.add_threads(parser)
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="also score every pen width and edge of the sweep (default: no)",
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    predictor = Predictor.load(args.weights, device=args.device)
    digits = [
        d for d in pendigits.read(pendigits.path_in(args.data_dir)) if d.writer in args.writers
    ]
    drawings = make_drawings(digits, args.seed)
    print(
        f"model {predictor.version}; {len(drawings)} pen digits of "
        f"{len({d.writer for d in drawings})} writers; seed {args.seed}; "
        f"pen {rasterizer.STROKE_WIDTH} px, edge {rasterizer.FEATHER} px"
    )
    ways = send_both_ways(predictor, drawings, args.device)
    print("\n".join(report(ways, drawings)))
    if args.sweep:
        print("\n".join(sweep(predictor, drawings)))
    print(f"took {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
