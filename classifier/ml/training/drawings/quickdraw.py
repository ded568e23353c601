"""Quick, Draw! doodles: 9,570 drawings of 345 things made in a web browser in 20 seconds each.

Quick, Draw! data by Google, CC BY 4.0 (`quickdraw/LICENSE`). One file per word,
`quickdraw/<word>.ndjson`, one JSON object a line: `word`, `countrycode`, `recognized` and
`drawing`, a list of strokes each `[[x...], [y...], [t...]]` with y growing downward and t in
milliseconds from the first point. A doodle is no digit, but some are drawn exactly as people
write digits (a circle, a line): `lookalikes` names them. The word (what was asked for) and the
country stand in for the writer when splitting: the players are anonymous.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classifier.ml.ink import Ink

FOLDER = Path("quickdraw")
LICENCE = "CC BY 4.0 (Quick, Draw! data by Google)"


@dataclass(frozen=True)
class Doodle:
    """One doodle: the word it was drawn for, the player's country code and its strokes."""

    word: str
    country: str
    ink: Ink


def path_in(data_dir: Path) -> Path:
    """Where the doodles lie under a data folder (`../shared/datasets` in tests and CI)."""
    return Path(data_dir) / FOLDER


def parse(line: str) -> Doodle:
    """One line of an `.ndjson` file as a doodle; raises ValueError on a malformed line."""
    record = json.loads(line)
    strokes = []
    for stroke in record["drawing"]:
        xs, ys = stroke[0], stroke[1]
        ts = stroke[2] if len(stroke) > 2 else None
        if len(xs) != len(ys) or (ts is not None and len(ts) != len(xs)):
            raise ValueError(f"a stroke of {record['word']!r} has columns of different lengths")
        if not xs:
            continue
        array = np.full((len(xs), 3), np.nan, dtype=np.float32)
        array[:, 0], array[:, 1] = xs, ys
        if ts is not None:
            array[:, 2] = ts
        strokes.append(array)
    if not strokes:
        raise ValueError(f"a doodle of {record['word']!r} has no points")
    return Doodle(str(record["word"]), str(record.get("countrycode") or ""), tuple(strokes))


def read_file(path: Path) -> list[Doodle]:
    """Every doodle of one `.ndjson` file, in file order (blank lines skipped)."""
    text = Path(path).read_text(encoding="utf-8")
    return [parse(line) for line in text.splitlines() if line.strip()]


def read(folder: Path, words: set[str] | None = None) -> list[Doodle]:
    """Every doodle under `folder` (`path_in(data_dir)`), by word in name order; only `words`
    when given."""
    doodles = []
    for path in sorted(Path(folder).glob("*.ndjson")):
        if words is None or path.stem in words:
            doodles.extend(read_file(path))
    return doodles
