"""Reading numbers: exact-number and per-digit accuracy by length and by gap, and single digits
read in number mode against digit mode.

    .venv/bin/python -m benchmarks.number_accuracy [--count 300] [--lengths 2-8] [--seed 0]
        [--data-dir DIR] [--weights PATH]
    .venv/bin/python -m benchmarks.number_accuracy --source pendigits [--input ink|png|both]
        [--writers held-out] [--no-times] [--late 0.0] [--count 300] [--lengths 2-8]

Numbers are drawn by the project's generator (classifier/ml/training/numbers.py) on the page's
768x384 number canvas, from the stroke templates ("pen") and from MNIST test digits redrawn along
their skeletons ("mnist"), with gaps from overlapping to wide, sizes, slants, slopes and baselines
varying. Each goes the service's way: PNG bytes -> `segment_bytes` -> one model call for all its
crops -> `Segmentation.read`. "In a row" is the set people write when asked for a number: 2-4
digits, gaps tight to wide. Single digits (templates and MNIST on the 384x384 digit canvas, MNIST
as 28x28 bitmaps and redrawn alone on the number canvas) are sent both ways: `preprocess` (digit
mode) and `segment_bytes` (number mode).

`--source pendigits` measures numbers written by real people instead: each composed of one pen
digits writer's digits (`--writers`: by default `held-out`, the validation writers that training
never sees, `splits.split_pendigits`; or a range such as 1-30) as ink
(classifier/ml/training/ink_numbers.py), with every gap kind, and sent both ways the service reads
them (`--input`): as ink through `segment_ink` (strokes grouped into digits), and as the PNG the
page would send of the same strokes (the 768x384 number canvas exported at 384x192, drawn as the
page draws them, its brush 0.065 of the height: `canvas.draw_page`) through `segment_bytes`. Both
then share the model call and the reading. The time per number is the service's work on it: decoding
and cutting (or grouping and rasterizing), the model call and the reading.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict

import numpy as np

from benchmarks import options
from classifier.ml.inference import Predictor
from classifier.ml.ink import transformed
from classifier.ml.ink_segmentation import segment_ink
from classifier.ml.input import ImageError
from classifier.ml.preprocessing import preprocess
from classifier.ml.segmentation import segment_bytes
from classifier.ml.training.canvas import (
    PAGE_EXPORT_SIZE,
    draw_page,
    render_bitmap_png,
    render_canvas,
    render_template,
    to_png,
)
from classifier.ml.training.data import load_test_split
from classifier.ml.training.drawings import pendigits, splits
from classifier.ml.training.ink_numbers import InkNumber, number_from, pools
from classifier.ml.training.numbers import (
    GAPS,
    NUMBER_CANVAS,
    draw_number,
    mnist_number,
    mnist_strokes,
    template_number,
)

IN_A_ROW = ("tight", "normal", "wide")
INPUTS = ("ink", "png")
HELD_OUT = "held-out"


def read(predictor: Predictor, png: bytes) -> str:
    """The number the service reads from PNG bytes ("" when it reads nothing, or when a piece
    is not a digit: the service's `number` is then null)."""
    return read_found(predictor, lambda: segment_bytes(png))


def read_found(predictor: Predictor, find) -> str:
    """The number read from what `find()` returns (an image's or an ink's segmentation)."""
    try:
        found = find()
        scored = predictor.predict_scored(found.images())
        digits = found.read(scored.probabilities)
    except ImageError:
        return ""
    if not all(scored.piece_is_digit[d.crop] for d in digits):
        return ""
    return "".join(str(int(d.probabilities.argmax())) for d in digits)


def read_digit(predictor: Predictor, png: bytes) -> int | None:
    """The digit the service answers in digit mode (None: not a digit)."""
    scored = predictor.predict_scored(preprocess(png)[None])
    return int(scored.probabilities[0].argmax()) if scored.is_digit[0] else None


def digits_right(truth: str, got: str) -> int:
    """Per-digit score: digits right in place when the count is right, else none."""
    if len(truth) != len(got):
        return 0
    return sum(a == b for a, b in zip(truth, got, strict=True))


class Tally:
    def __init__(self) -> None:
        self.exact: dict[str, list[int]] = defaultdict(lambda: [0, 0])
        self.digits: dict[str, list[int]] = defaultdict(lambda: [0, 0])

    def add(self, keys: list[str], truth: str, got: str) -> None:
        for key in keys:
            self.exact[key][0] += truth == got
            self.exact[key][1] += 1
            self.digits[key][0] += digits_right(truth, got)
            self.digits[key][1] += len(truth)

    def lines(self, keys: list[str]) -> list[str]:
        rows = []
        for key in keys:
            if key not in self.exact:
                continue
            (e, n), (d, m) = self.exact[key], self.digits[key]
            rows.append(
                f"  {key:<28} exact {100 * e / n:6.2f}% ({e}/{n})   "
                f"per digit {100 * d / m:6.2f}% ({d}/{m})"
            )
        return rows


def parse_lengths(text: str) -> list[int]:
    low, _, high = text.partition("-")
    return list(range(int(low), int(high or low) + 1))


def page_png(number: InkNumber) -> bytes:
    """The PNG the page sends of this ink: the number canvas exported at the page's size, the
    strokes drawn as the page draws them (`canvas.draw_page`)."""
    width, height = NUMBER_CANVAS
    scale = PAGE_EXPORT_SIZE / height
    ink = transformed(number.ink, np.eye(2) * scale)
    return to_png(draw_page(ink, round(width * scale), PAGE_EXPORT_SIZE))


def pen_writers(text: str, drawings: list) -> list[int]:
    """The writers `--writers` names: `held-out` (the validation writers) or a range."""
    if text == HELD_OUT:
        return sorted({d.writer for d in splits.split_pendigits(drawings)[1]})
    return parse_lengths(text)


def pen_writers_numbers(args: argparse.Namespace, predictor: Predictor) -> None:
    """Numbers of real writers' digits, sent as ink, as PNG or both (module docstring)."""
    drawings = pendigits.read(pendigits.path_in(args.data_dir))
    writers = pen_writers(args.writers, drawings)
    by_writer = pools(drawings)
    writers = [w for w in writers if w in by_writer]
    inputs = INPUTS if args.input == "both" else (args.input,)
    lengths = parse_lengths(args.lengths)
    per_length = max(1, args.count // len(lengths))
    rng = np.random.default_rng(args.seed)
    tallies = {name: Tally() for name in inputs}
    seconds = dict.fromkeys(inputs, 0.0)
    gaps = list(GAPS)
    for length in lengths:
        for k in range(per_length):
            writer = writers[int(rng.integers(len(writers)))]
            gap = gaps[k % len(gaps)]
            number = number_from(
                by_writer[writer], rng, length, gap=gap, times=args.times, late=args.late
            )
            for name in inputs:
                if name == "ink":
                    started = time.perf_counter()
                    got = read_found(predictor, lambda n=number: segment_ink(n.ink))
                else:
                    png = page_png(number)
                    started = time.perf_counter()
                    got = read(predictor, png)
                seconds[name] += time.perf_counter() - started
                keys = ["all", f"{length} digits", f"gap {gap}"]
                tallies[name].add(keys, number.label, got)
    total = per_length * len(lengths)
    print(
        f"Numbers of pen digits writers {args.writers} {writers}, {per_length} "
        f"per length, gaps from overlapping to wide, ink {'with' if args.times else 'without'} "
        f"times, late strokes {args.late:.0%}:"
    )
    for name in inputs:
        print(f"\nSent as {name} ({1000 * seconds[name] / total:.1f} ms a number):")
        tally = tallies[name]
        print("\n".join(tally.lines(["all", *[f"{n} digits" for n in lengths]])))
        print("\n".join(tally.lines([f"gap {g}" for g in GAPS])))
    if len(inputs) == 2:
        (by_ink, n), (by_png, _) = tallies["ink"].exact["all"], tallies["png"].exact["all"]
        print(f"\nInk - PNG, exact numbers: {100 * (by_ink - by_png) / n:+.2f} points")


def main() -> int:
    parser = options.parser(__doc__)
    options.add_weights(parser)
    options.add_data_dir(parser, "folder holding MNIST/ and pendigits/")
    parser.add_argument(
        "--count", type=int, default=300, help="numbers per set and per length (default: 300)"
    )
    parser.add_argument("--lengths", default="2-8", help="lengths of the numbers (default: 2-8)")
    parser.add_argument("--singles", type=int, default=1000, help="single digits (default: 1000)")
    options.add_seed(parser, what="seed of the numbers drawn")
    parser.add_argument(
        "--source",
        choices=("generated", "pendigits"),
        default="generated",
        help="generated: templates and MNIST drawn as PNG; pendigits: real writers "
        "(default: generated)",
    )
    parser.add_argument(
        "--input",
        choices=(*INPUTS, "both"),
        default="both",
        help="pendigits: how the numbers are sent (default: both)",
    )
    parser.add_argument(
        "--writers",
        default=HELD_OUT,
        help=f"pendigits: the writers, {HELD_OUT!r} (the validation writers training never "
        f"sees) or a range such as 1-30 (default: {HELD_OUT})",
    )
    parser.add_argument(
        "--times",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="pendigits: ink with the pen's times or without (default: with)",
    )
    parser.add_argument(
        "--late", type=float, default=0.0, help="pendigits: share of bars drawn late (default: 0)"
    )
    args = parser.parse_args()

    import torch

    torch.set_num_threads(1)
    predictor = Predictor.load(args.weights, device="cpu")
    if args.source == "pendigits":
        started = time.perf_counter()
        pen_writers_numbers(args, predictor)
        print(f"\n({time.perf_counter() - started:.0f} s, one torch thread)")
        return 0
    test = load_test_split(args.data_dir)
    mnist_images, mnist_labels = np.asarray(test.images), np.asarray(test.labels)
    rng = np.random.default_rng(args.seed)
    started = time.perf_counter()

    # The judged set: pen-drawn numbers of 2-4 digits written in a row.
    row = Tally()
    for k in range(args.count):
        length = 2 + k % 3
        number = template_number(rng, length, gap=IN_A_ROW[k % len(IN_A_ROW)])
        got = read(predictor, to_png(number.image))
        row.add(["all", f"{length} digits", f"gap {number.gap}"], number.label, got)
    print(f"Pen-drawn numbers of 2-4 digits in a row, 768x384 canvas ({args.count}):")
    print("\n".join(row.lines(["all", "2 digits", "3 digits", "4 digits"])))
    print("\n".join(row.lines([f"gap {g}" for g in IN_A_ROW])))

    # Every length and every gap, from both sources.
    lengths = parse_lengths(args.lengths)
    per_set = max(1, args.count // len(lengths))
    for source in ("pen", "mnist"):
        tally = Tally()
        for length in lengths:
            for k in range(per_set):
                gap = list(GAPS)[k % len(GAPS)]
                if source == "pen":
                    number = template_number(rng, length, gap=gap)
                else:
                    number = mnist_number(mnist_images, mnist_labels, rng, length, gap=gap)
                got = read(predictor, to_png(number.image))
                tally.add(["all", f"{length} digits", f"gap {gap}"], number.label, got)
        print(f"\n{source} numbers, {per_set} per length, gaps from overlapping to wide:")
        print("\n".join(tally.lines(["all", *[f"{n} digits" for n in lengths]])))
        print("\n".join(tally.lines([f"gap {g}" for g in GAPS])))

    # Single digits: number mode against digit mode, on the same images.
    print(f"\nSingle digits on the 384x384 digit canvas ({args.singles}), read both ways:")
    for source in ("pen", "mnist"):
        right = {"digit mode": 0, "number mode": 0}
        total = 0
        for k in range(args.singles // 2):
            if source == "pen":
                label = k % 10
                image = render_template(label, rng=rng)
            else:
                index = int(rng.integers(0, len(mnist_labels)))
                label = int(mnist_labels[index])
                image = render_canvas(mnist_images[index], rng, style="page")
            png = to_png(image)
            as_digit = read_digit(predictor, png)
            right["digit mode"] += as_digit == label
            right["number mode"] += read(predictor, png) == str(label)
            total += 1
        print(
            f"  {source:<6} digit mode {100 * right['digit mode'] / total:6.2f}%   "
            f"number mode {100 * right['number mode'] / total:6.2f}%   ({total} digits)"
        )
    # More single digits, from their own generator (the sets above stay as they were): MNIST
    # test digits as the 28x28 bitmaps other clients send, and redrawn alone on the number canvas.
    singles = np.random.default_rng(args.seed + 1)
    print(f"\nSingle MNIST test digits ({args.singles // 2} each), read both ways:")
    for source in ("28x28 bitmap", "768x384 number canvas"):
        right = {"digit mode": 0, "number mode": 0}
        for _ in range(args.singles // 2):
            index = int(singles.integers(0, len(mnist_labels)))
            label = int(mnist_labels[index])
            if source == "28x28 bitmap":
                png = render_bitmap_png(mnist_images[index])
            else:
                strokes = [mnist_strokes(mnist_images[index])]
                png = to_png(draw_number(strokes, str(label), singles, gap="normal").image)
            as_digit = read_digit(predictor, png)
            right["digit mode"] += as_digit == label
            right["number mode"] += read(predictor, png) == str(label)
        total = args.singles // 2
        print(
            f"  {source:<22} digit mode {100 * right['digit mode'] / total:6.2f}%   "
            f"number mode {100 * right['number mode'] / total:6.2f}%   ({total} digits)"
        )
    print(f"\n({time.perf_counter() - started:.0f} s, one torch thread)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
