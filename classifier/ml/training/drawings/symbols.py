"""Math symbols drawn by hand: 1,357 drawings of 467 symbols (Greek letters, arrows, operators,
set symbols) made in a web page.

detypify-data (QuarticCat), MIT (`symbols/LICENSE`). One file per symbol, `symbols/<name>.txt`
(the name as Typst spells it: `emptyset`, `Phi`, `arrow.r.double`), one JSON a line: a list of
strokes each `[[x, y], ...]` with y growing downward and no times. Some symbols are drawn exactly
as people write digits (an empty set is a slashed zero): `lookalikes` names them. The symbol
stands in for the writer when splitting: the visitors are anonymous.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classifier.ml.ink import Ink

FOLDER = Path("symbols")
LICENCE = "MIT (detypify-data, QuarticCat)"


@dataclass(frozen=True)
class SymbolDrawing:
    """One drawing of a symbol: the symbol's name and its strokes (no times: NaN)."""

    name: str
    ink: Ink


def path_in(data_dir: Path) -> Path:
    """Where the symbols lie under a data folder (`../shared/datasets` in tests and CI)."""
    return Path(data_dir) / FOLDER


def parse(line: str, name: str) -> SymbolDrawing:
    """One line of a symbol's file; raises ValueError on a malformed line."""
    strokes = []
    for stroke in json.loads(line):
        if not stroke:
            continue
        array = np.full((len(stroke), 3), np.nan, dtype=np.float32)
        array[:, :2] = np.asarray(stroke, dtype=np.float32).reshape(-1, 2)
        strokes.append(array)
    if not strokes:
        raise ValueError(f"a drawing of {name!r} has no points")
    return SymbolDrawing(name, tuple(strokes))


def read_file(path: Path) -> list[SymbolDrawing]:
    """Every drawing of one symbol's file, in file order (blank lines skipped)."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    return [parse(line, path.stem) for line in text.splitlines() if line.strip()]


def read(folder: Path, names: set[str] | None = None) -> list[SymbolDrawing]:
    """Every drawing under `folder` (`path_in(data_dir)`), by symbol in name order; only `names`
    when given. The licence file is not a symbol."""
    drawings = []
    for path in sorted(Path(folder).glob("*.txt")):
        if names is None or path.stem in names:
            drawings.extend(read_file(path))
    return drawings
