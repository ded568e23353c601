"""The UCI pen digits: 7,494 digits written on a pressure tablet by 30 writers, as pen strokes.

Alpaydin and Alimoglu, "Pen-Based Recognition of Handwritten Digits", UCI Machine Learning
Repository (CC BY 4.0). The file is UNIPEN text: `.SEGMENT DIGIT n ? "d"` starts a digit,
`.COMMENT d writer k` names its writer (1-30), and each `.PEN_DOWN` ... `.PEN_UP` block is one
stroke of `x y` lines on a 500x500 tablet whose y grows upward; here y is turned to grow
downward, as on a screen. The file has no times: points come at the tablet's fixed rate, so a
stroke's point index stands for its time where a caller needs one (`with_times`).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classifier.ml.ink import Ink

FILE = Path("pendigits") / "pendigits-orig.tra"
LICENCE = "CC BY 4.0 (Alpaydin, Alimoglu; UCI Machine Learning Repository)"
TABLET_SIDE = 500  # y is flipped within this
# The tablet's sampling interval, and the pause the file gives between strokes (`.DT 100`), in ms:
# "x and y tablet coordinates ... at fixed time intervals (sampling rate) of 100 milliseconds".
SAMPLE_MS = 100.0

_SEGMENT = re.compile(r'\.SEGMENT\s+DIGIT\s+\S+\s+\?\s+"(\d)"')


@dataclass(frozen=True)
class PenDigit:
    """One written digit: its label, its writer (1-30) and its strokes in drawing order."""

    label: int
    writer: int
    ink: Ink


def path_in(data_dir: Path) -> Path:
    """Where the file lies under a data folder (`../shared/datasets` in tests and CI)."""
    return Path(data_dir) / FILE


def read(path: Path) -> list[PenDigit]:
    """Every digit of a UNIPEN file, in file order."""
    return list(_parse(Path(path).read_text(encoding="ascii", errors="replace").splitlines()))


def _parse(lines: list[str]) -> Iterator[PenDigit]:
    label: int | None = None
    writer = 0
    strokes: list[np.ndarray] = []
    current: list[tuple[float, float]] | None = None

    def finish() -> PenDigit | None:
        kept = [s for s in strokes if len(s)]
        if label is None or not kept:
            return None
        return PenDigit(label, writer, tuple(kept))

    for line in lines:
        text = line.strip()
        if not text:
            continue
        if text.startswith(".SEGMENT"):
            done = finish()
            if done is not None:
                yield done
            match = _SEGMENT.match(text)
            label = int(match[1]) if match else None
            writer, strokes, current = 0, [], None
        elif text.startswith(".COMMENT"):
            fields = text.split()
            if len(fields) >= 3 and fields[2].isdigit():
                writer = int(fields[2])
        elif text.startswith(".PEN_DOWN"):
            current = []
        elif text.startswith(".PEN_UP"):
            if current:
                stroke = np.full((len(current), 3), np.nan, dtype=np.float32)
                stroke[:, :2] = current
                stroke[:, 1] = TABLET_SIDE - stroke[:, 1]
                strokes.append(stroke)
            current = None
        elif current is not None and not text.startswith("."):
            x, y = text.split()[:2]
            current.append((float(x), float(y)))
    done = finish()
    if done is not None:
        yield done


def with_times(ink: Ink) -> Ink:
    """The ink with times: a point every `SAMPLE_MS`, each stroke `SAMPLE_MS` after the last."""
    timed, clock = [], 0.0
    for stroke in ink:
        stroke = stroke.copy()
        stroke[:, 2] = clock + SAMPLE_MS * np.arange(len(stroke), dtype=np.float32)
        clock = float(stroke[-1, 2]) + SAMPLE_MS
        timed.append(stroke)
    return tuple(timed)


def by_writer(digits: list[PenDigit]) -> dict[int, list[PenDigit]]:
    """The digits grouped by writer: validation holds whole writers out."""
    groups: dict[int, list[PenDigit]] = {}
    for digit in digits:
        groups.setdefault(digit.writer, []).append(digit)
    return groups
