"""Weights judged on every set of drawings at once, side by side: MNIST and drawings by people.

    .venv/bin/python -m benchmarks.real_drawings [--weights PATH ...] [--data-dir DIR]
        [--limit N] [--seed 0] [--held-out] [--threads 1] [--json] [--styles-png PATH]

For each `--weights` (repeat it to compare; the shipped weights by default): the MNIST test set
(accuracy, kept and right by the weights' own `is_digit`); the pen digits (30 writers the shipped
model never trained on) sent as ink through the serving rasterizer and as the page's PNG, kept and
right per class and the worst writers; the world's styles made from real pen strokes
(classifier/ml/training/drawings/styles.py: slashed and dotted zeros, barred sevens, ones with a
long flag and a foot, open fours), kept and right per style; the Quick, Draw! doodles and the math
symbols turned away, with the ten words (symbols) most often taken for digits, and the look-alikes
drawn as digits (classifier/ml/training/drawings/lookalikes.py) kept. Every set is drawn once and
scored by each weights (classifier/ml/training/realsets.py); a set whose files are absent is said to
be absent.
`--styles-png` also draws a few examples of each style, as the rasterizer and the page draw them.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageDraw

from benchmarks import options
from classifier.ml.inference import Predictor
from classifier.ml.rasterizer import rasterize
from classifier.ml.training import realsets
from classifier.ml.training.canvas import draw_page, page_ink
from classifier.ml.training.data import DataError, load_test_split
from classifier.ml.training.drawings import pendigits, styles

# Examples of each style in `--styles-png`, and the side of each picture in it.
STYLE_EXAMPLES = 6
TILE = 84
LABEL = 46  # the width of the tables' first column


def measure(predictor: Predictor, prepared: dict, mnist=None) -> dict:
    """One weights' figures on every prepared set (and MNIST's test split when given)."""
    out: dict[str, Any] = {"model": predictor.version}
    if mnist is not None:
        out["mnist"] = realsets.mnist_figures(predictor, mnist.images.numpy(), mnist.labels.numpy())
    out["sets"] = realsets.report(predictor, prepared)
    return out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def compare(results: list[dict]) -> list[str]:
    """The figures of several weights as a table: a column per weights and way, then the lists
    (worst writers, words most kept) a line per weights."""
    names = [r["model"] for r in results]
    lines = ["weights: " + ", ".join(f"[{i}] {n}" for i, n in enumerate(names))]
    ways = realsets.WAYS
    header = f"{'':<{LABEL}}" + "".join(
        f"{f'[{i}] {w}':>11}" for i in range(len(names)) for w in ways
    )

    def row(label: str, values: list[list[str]]) -> str:
        return f"{label:<{LABEL}}" + "".join(f"{v:>11}" for one in values for v in one)

    if all("mnist" in r for r in results):
        lines.append("MNIST test (10,000)" + "".join(f"   [{i}]" for i in range(len(names))))
        for key in ("accuracy", "kept_and_right", "turned_away"):
            lines.append(
                f"  {key:<{LABEL - 2}}" + "".join(f"{_pct(r['mnist'][key]):>11}" for r in results)
            )
    for name in realsets.SETS:
        sets = [r["sets"].get(name) for r in results]
        if sets[0] is None:
            continue
        if sets[0].get("absent"):
            lines.append(f"{name}: absent (no files at {sets[0]['source']})")
            continue
        group = realsets.GROUP[name]
        lines.append(f"{name} ({sets[0]['count']:,} drawings; {sets[0]['licence']})")
        lines.append(header)
        figures = [[s["ways"].get(w, {}) for w in ways] for s in sets]
        if "per_class" in figures[0][0]:
            for key in ("kept_and_right", "accuracy", "turned_away"):
                lines.append(row(f"  {key}", [[_pct(f.get(key)) for f in fs] for fs in figures]))
            keys = figures[0][0]["per_class" if name == "pendigits" else f"per_{group}"]
            per = "per_class" if name == "pendigits" else f"per_{group}"
            for key in keys:
                label = f"  {'class ' if per == 'per_class' else ''}{key}, kept and right"
                lines.append(
                    row(
                        label,
                        [
                            [_pct(f[per].get(key, {}).get("kept_and_right")) for f in fs]
                            for fs in figures
                        ],
                    )
                )
            if name == "styles":
                lines.append(
                    row(
                        "  slashed zero, turned away",
                        [
                            [_pct(f[per].get("slashed zero", {}).get("turned_away")) for f in fs]
                            for fs in figures
                        ],
                    )
                )
            for i, fs in enumerate(figures):
                for w, f in zip(ways, fs, strict=True):
                    worst = ", ".join(f"{g} {100 * v:.1f}%" for g, v in f[f"worst_{group}s"])
                    lines.append(f"  [{i}] {w} worst {group}s: {worst}")
        else:
            lines.append(
                row("  turned away", [[_pct(f.get("turned_away")) for f in fs] for fs in figures])
            )
            lines.append(
                row(
                    "  look-alikes kept",
                    [[_pct(f["lookalikes"]["kept"]) for f in fs] for fs in figures],
                )
            )
            for i, fs in enumerate(figures):
                for w, f in zip(ways, fs, strict=True):
                    most = ", ".join(
                        f"{m[group]} {100 * m['kept']:.0f}% as {m['read_as']}"
                        for m in f["most_kept"]
                    )
                    lines.append(f"  [{i}] {w} most kept: {most}")
    return lines


def draw_styles(path: Path, pen: list, seed: int = 0, examples: int = STYLE_EXAMPLES) -> None:
    """A grid of `examples` of each style made from the pen digits `pen`: a row per style, each
    example as the page draws it (left) and as the rasterizer gives the model (right)."""
    made = styles.make_styles(pen, seed)
    rows = []
    label_width = 190
    for name in styles.STYLES:
        inks = [s.ink for s in made if s.style == name][:examples]
        row = Image.new("L", (label_width + examples * (2 * TILE + 12), TILE + 8), 96)
        ImageDraw.Draw(row).text((6, TILE // 2 - 6), name, fill=255)
        for i, ink in enumerate(inks):
            page = draw_page(page_ink(ink)).convert("L").resize((TILE, TILE))
            model = Image.fromarray(rasterize([ink])[0]).resize(
                (TILE, TILE), Image.Resampling.NEAREST
            )
            left = label_width + i * (2 * TILE + 12)
            row.paste(page, (left, 4))
            row.paste(model, (left + TILE + 2, 4))
        rows.append(row)
    grid = Image.new("L", (rows[0].width, sum(r.height for r in rows)), 96)
    for i, row in enumerate(rows):
        grid.paste(row, (0, i * row.height))
    grid.save(path)


def main() -> int:
    parser = options.parser(__doc__)
    options.add_weights(parser, repeat=True)
    options.add_data_dir(parser, "folder holding MNIST/, pendigits/, quickdraw/ and symbols/")
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        metavar="N",
        help="at most N drawings of each real set, chosen at random (default: all)",
    )
    options.add_seed(parser, what="seed of the sampling, the styles and the drawings' places")
    parser.add_argument(
        "--held-out",
        action="store_true",
        help="only what training on real drawings never learns: the validation writers' pen "
        "digits and their styles, the held-out words and symbols (default: every drawing)",
    )
    options.add_threads(parser)
    parser.add_argument(
        "--json", action="store_true", help="print the figures as one JSON list (default: text)"
    )
    parser.add_argument(
        "--styles-png",
        type=Path,
        default=None,
        help="also draw a few examples of each style into this PNG (default: none)",
    )
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    predictors = [Predictor.load(w, device="cpu") for w in options.weights_of(args)]
    try:
        mnist = load_test_split(args.data_dir, download=False)
    except DataError as exc:
        print(f"MNIST: absent ({exc})")
        mnist = None
    sets = realsets.read_sets(args.data_dir, args.limit, args.seed, held_out=args.held_out)
    prepared = realsets.prepare_all(sets, args.seed)
    drawn = time.perf_counter() - started
    results = [measure(p, prepared, mnist) for p in predictors]
    if args.json:
        print(json.dumps(results))
    else:
        print("\n".join(compare(results)))
    if args.styles_png is not None:
        pen = [
            pendigits.PenDigit(d.label, d.writer, pendigits.with_times(d.ink))
            for d in pendigits.read(pendigits.path_in(args.data_dir))
        ]
        draw_styles(args.styles_png, pen, args.seed)
        print(f"styles drawn into {args.styles_png}")
    print(f"took {time.perf_counter() - started:.0f} s ({drawn:.0f} s reading and drawing)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
