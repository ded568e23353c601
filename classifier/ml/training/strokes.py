"""Non-digits drawn stroke by stroke: scribbles, zigzags, shapes, invented letters, digit pieces.

Each maker returns strokes in a unit box (x right, y down), as `canvas.TEMPLATES`: a tangle or a
zigzag, a shape people doodle (a star, a heart, an arrow, a crossed circle...), a glyph of an
invented alphabet (a few random strokes joined), a character of a random invented alphabet drawn
as people draw an unknown script (smooth joined strokes, loops, bars, hooks and dots), a piece of
a digit, a digit turned until it is none, or several digits in one box. `draw_strokes` puts them
on a canvas with the brush, at a random size, place, slant and rotation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

from classifier.ml.brush import STYLES, compose, draw_mask
from classifier.ml.training.canvas import (
    CANVAS_SIZE,
    STYLE_WEIGHTS,
    TEMPLATES,
    Polyline,
    template_segments,
)


def _circle(cx: float, cy: float, r: float, n: int = 32, start: float = 0.0) -> Polyline:
    return [
        (cx + r * math.cos(t), cy + r * math.sin(t))
        for t in np.linspace(start, start + 2 * math.pi, n)
    ]


def _star(rng: np.random.Generator) -> list[Polyline]:
    points = int(rng.choice([5, 5, 6, 7]))
    inner = float(rng.uniform(0.18, 0.3))
    turn = float(rng.uniform(0, 2 * math.pi))
    ring = [
        (
            0.5 + (0.5 if k % 2 == 0 else inner) * math.cos(turn + k * math.pi / points),
            0.5 + (0.5 if k % 2 == 0 else inner) * math.sin(turn + k * math.pi / points),
        )
        for k in range(2 * points + 1)
    ]
    if rng.random() < 0.4:  # the pentagram people draw in one stroke
        ring = [
            (
                0.5 + 0.5 * math.cos(turn + k * 4 * math.pi / 5),
                0.5 + 0.5 * math.sin(turn + k * 4 * math.pi / 5),
            )
            for k in range(6)
        ]
    return [ring]


def _heart(_: np.random.Generator) -> list[Polyline]:
    t = np.linspace(0, 2 * math.pi, 48)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return [list(zip(0.5 + x / 34, 0.45 - y / 34, strict=True))]


def _arrow(rng: np.random.Generator) -> list[Polyline]:
    head = float(rng.uniform(0.2, 0.35))
    return [
        [(0.0, 0.5), (1.0, 0.5)],
        [(1.0 - head, 0.5 - head), (1.0, 0.5), (1.0 - head, 0.5 + head)],
    ]


def _shape(rng: np.random.Generator) -> list[Polyline]:
    kind = str(rng.choice(SHAPES))
    return SHAPE_MAKERS[kind](rng)


SHAPE_MAKERS: dict[str, Callable[[np.random.Generator], list[Polyline]]] = {
    "crossed_circle": lambda r: [
        _circle(0.5, 0.5, 0.5),
        [(0.5, 0.0), (0.5, 1.0)],
        [(0.0, 0.5), (1.0, 0.5)],
    ],
    "x_circle": lambda r: [
        _circle(0.5, 0.5, 0.5),
        [(0.15, 0.15), (0.85, 0.85)],
        [(0.85, 0.15), (0.15, 0.85)],
    ],
    "star": _star,
    "heart": _heart,
    "arrow": _arrow,
    "box": lambda r: [[(0, 0), (1, 0), (1, 1), (0, 1), (0, 0)]],
    "crossed_box": lambda r: [
        [(0, 0), (1, 0), (1, 1), (0, 1), (0, 0)],
        [(0, 0), (1, 1)],
        [(1, 0), (0, 1)],
    ],
    "triangle": lambda r: [[(0.5, 0.0), (1.0, 0.9), (0.0, 0.9), (0.5, 0.0)]],
    "spiral": lambda r: [
        [
            (0.5 + t / 30 * math.cos(t), 0.5 + t / 30 * math.sin(t))
            for t in np.linspace(0.5, 14.5, 60)
        ]
    ],
    "house": lambda r: [[(0, 1), (0, 0.4), (0.5, 0), (1, 0.4), (1, 1), (0, 1)]],
    "hash": lambda r: [
        [(0.35, 0), (0.3, 1)],
        [(0.7, 0), (0.65, 1)],
        [(0, 0.33), (1, 0.33)],
        [(0, 0.67), (1, 0.67)],
    ],
    "smiley": lambda r: [
        _circle(0.5, 0.5, 0.5),
        _circle(0.33, 0.35, 0.05, 8),
        _circle(0.67, 0.35, 0.05, 8),
        [(0.5 + 0.28 * math.cos(t), 0.55 + 0.2 * math.sin(t)) for t in np.linspace(0.3, 2.8, 16)],
    ],
    "diamond": lambda r: [[(0.5, 0), (1, 0.5), (0.5, 1), (0, 0.5), (0.5, 0)]],
    "lightning": lambda r: [[(0.6, 0), (0.2, 0.55), (0.7, 0.45), (0.3, 1)]],
    "cloud": lambda r: [
        [
            (
                0.5 + (0.42 + 0.08 * math.cos(7 * t)) * math.cos(t),
                0.5 + (0.3 + 0.06 * math.cos(7 * t)) * math.sin(t),
            )
            for t in np.linspace(0, 2 * math.pi, 70)
        ]
    ],
    "wave": lambda r: [
        [(x, 0.5 + 0.25 * math.sin(x * 4 * math.pi)) for x in np.linspace(0, 1, 40)]
    ],
}
SHAPES = tuple(SHAPE_MAKERS)


def _scribble(rng: np.random.Generator) -> list[Polyline]:
    """A tangle: a random walk with momentum, then smoothed."""
    n = int(rng.integers(40, 120))
    angle = float(rng.uniform(0, 2 * math.pi))
    turn = rng.normal(0, float(rng.uniform(0.4, 1.2)), n)
    angles = angle + np.cumsum(turn)
    steps = np.stack([np.cos(angles), np.sin(angles)], axis=1) * float(rng.uniform(0.5, 1.5))
    points = np.cumsum(steps, axis=0)
    return [[(float(x), float(y)) for x, y in points]]


def _zigzag(rng: np.random.Generator) -> list[Polyline]:
    zigs = int(rng.integers(3, 9))
    amplitude = float(rng.uniform(0.15, 0.5))
    xs = np.linspace(0, 1, zigs + 1) + rng.normal(0, 0.02, zigs + 1)
    ys = (
        0.5
        + amplitude * np.where(np.arange(zigs + 1) % 2 == 0, -1, 1)
        + rng.normal(0, 0.04, zigs + 1)
    )
    stroke = list(zip(xs.tolist(), ys.tolist(), strict=True))
    if rng.random() < 0.3:  # a second row, as in a coiled line
        stroke += [(x, y + 0.6) for x, y in reversed(stroke)]
    return [stroke]


def _glyph(rng: np.random.Generator) -> list[Polyline]:
    """A character of an alphabet nobody knows: 2-5 lines, arcs and loops, mostly joined."""
    strokes: list[Polyline] = []
    at = (float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.1, 0.9)))
    for _ in range(int(rng.integers(2, 6))):
        if strokes and rng.random() < 0.3:
            at = (float(rng.uniform(0.1, 0.9)), float(rng.uniform(0.1, 0.9)))
        kind = rng.choice(["line", "arc", "loop", "hook"], p=[0.4, 0.3, 0.15, 0.15])
        if kind == "line":
            end = (float(rng.uniform(0, 1)), float(rng.uniform(0, 1)))
            stroke = [at, end]
        elif kind == "loop":
            r = float(rng.uniform(0.08, 0.2))
            start = float(rng.uniform(0, 2 * math.pi))
            cx, cy = at[0] - r * math.cos(start), at[1] - r * math.sin(start)
            stroke = _circle(cx, cy, r, 20, start)
        else:
            r = float(rng.uniform(0.15, 0.45))
            start = float(rng.uniform(0, 2 * math.pi))
            sweep = float(rng.uniform(0.6, 2.2 if kind == "arc" else 1.0)) * rng.choice([-1, 1])
            cx, cy = at[0] - r * math.cos(start), at[1] - r * math.sin(start)
            stroke = [
                (cx + r * math.cos(t), cy + r * math.sin(t))
                for t in np.linspace(start, start + sweep, 16)
            ]
            if kind == "hook":
                tip = stroke[-1]
                stroke.append((tip[0] + float(rng.uniform(-0.2, 0.2)), tip[1] + 0.2))
        strokes.append(stroke)
        at = stroke[-1]
    return strokes


def _smooth(points: np.ndarray, rounds: int = 2) -> Polyline:
    """Chaikin's corner cutting: the smooth line a hand draws through the points."""
    for _ in range(rounds):
        if len(points) < 3:
            break
        q = 0.75 * points[:-1] + 0.25 * points[1:]
        r = 0.25 * points[:-1] + 0.75 * points[1:]
        points = np.concatenate([points[:1], np.stack([q, r], axis=1).reshape(-1, 2), points[-1:]])
    return [(float(x), float(y)) for x, y in points]


def _wander(rng: np.random.Generator, start: np.ndarray, turns: int) -> np.ndarray:
    """A pen's path from `start`: `turns` steps, each turning from the last by a random angle."""
    angle = float(rng.uniform(0, 2 * math.pi))
    points = [start]
    for _ in range(turns):
        angle += float(rng.normal(0, 1.3))
        step = float(rng.uniform(0.15, 0.45))
        points.append(points[-1] + step * np.array([math.cos(angle), math.sin(angle)]))
    return np.asarray(points)


def _character(rng: np.random.Generator) -> list[Polyline]:
    """A character of an alphabet nobody knows, drawn as people draw letters of a script they
    do not know (as in Omniglot): smooth strokes joined to or crossing one another, closed loops
    and shapes, hooks, bars and dots. Random alphabets stand for the real ones the detector is
    never shown."""
    strokes: list[Polyline] = []
    count = int(rng.choice([1, 2, 2, 3, 3, 3, 4, 4, 5]))
    for k in range(count):
        # Mostly joined: a stroke starts on (or crosses) one drawn before.
        if strokes and rng.random() < 0.75:
            line = strokes[int(rng.integers(len(strokes)))]
            start = np.asarray(line[int(rng.integers(len(line)))], dtype=np.float64)
        else:
            start = rng.uniform(0.0, 1.0, 2)
        kind = str(
            rng.choice(
                ["curve", "closed", "bar", "dot", "hook"],
                p=[0.4, 0.2, 0.2, 0.08, 0.12] if k else [0.6, 0.3, 0.0, 0.0, 0.1],
            )
        )
        if kind == "closed":  # a ring or a rounded polygon, from its rim
            corners = int(rng.choice([3, 4, 5, 24]))
            radius = float(rng.uniform(0.12, 0.35))
            turn = float(rng.uniform(0, 2 * math.pi))
            ring = np.asarray(
                [
                    (
                        radius * math.cos(turn + 2 * math.pi * j / corners),
                        radius
                        * float(rng.uniform(0.6, 1.0))
                        * math.sin(turn + 2 * math.pi * j / corners),
                    )
                    for j in range(corners + 1)
                ]
            )
            ring[-1] = ring[0]
            strokes.append(_smooth(ring - ring[0] + start, 1 if corners < 24 else 0))
        elif kind == "bar":  # a straight line through the point
            angle = float(rng.uniform(0, math.pi))
            half = float(rng.uniform(0.15, 0.45)) * np.array([math.cos(angle), math.sin(angle)])
            shift = float(rng.uniform(-0.6, 0.6))
            strokes.append([tuple(start - half * (1 - shift)), tuple(start + half * (1 + shift))])
        elif kind == "dot":  # a dot or a tick beside the rest
            at = start + rng.normal(0, 0.25, 2)
            tick = rng.normal(0, 0.04, 2)
            strokes.append([tuple(at), tuple(at + tick)])
        else:
            path = _wander(rng, start, int(rng.integers(2, 6)))
            if kind == "hook":  # ends curling into a small loop or hook
                r = float(rng.uniform(0.05, 0.12))
                t0 = float(rng.uniform(0, 2 * math.pi))
                sweep = float(rng.uniform(1.0, 2.0)) * math.pi * rng.choice([-1, 1])
                end = path[-1]
                centre = end - r * np.array([math.cos(t0), math.sin(t0)])
                curl = [
                    centre + r * np.array([math.cos(t), math.sin(t)])
                    for t in np.linspace(t0, t0 + sweep, 10)
                ]
                path = np.concatenate([path, np.asarray(curl)[1:]])
            strokes.append(_smooth(path))
    return [[(float(x), float(y)) for x, y in stroke] for stroke in strokes]


def digit_template(
    rng: np.random.Generator, digits: Sequence[int] = tuple(range(10))
) -> list[Polyline]:
    """The strokes of a random variant of one of `digits`, from `canvas.TEMPLATES`."""
    digit = int(rng.choice(digits))
    variants = TEMPLATES[digit]
    return variants[str(rng.choice(list(variants)))]


def _digit_piece(rng: np.random.Generator) -> list[Polyline]:
    """A digit cut by a line, one side kept; or the two halves pulled apart."""
    strokes = digit_template(rng, (2, 3, 4, 5, 6, 8, 9))
    angle = float(rng.uniform(0, math.pi))
    normal = np.array([math.cos(angle), math.sin(angle)])
    offset = float(rng.uniform(-0.1, 0.1))
    apart = rng.random() < 0.35
    pieces: list[Polyline] = []
    for stroke in strokes:
        points = np.asarray(stroke) - 0.5
        side = points @ normal > offset
        for keep in (True, False) if apart else (bool(rng.random() < 0.5),):
            shift = normal * (0.35 if keep else -0.35) if apart else 0.0
            run: Polyline = []
            for point, on in zip(points + shift + 0.5, side, strict=True):
                if on == keep:
                    run.append((float(point[0]), float(point[1])))
                elif run:
                    pieces.append(run)
                    run = []
            if run:
                pieces.append(run)
    # Crumbs of a stroke read as dots, not as part of a digit.
    pieces = [piece for piece in pieces if len(piece) >= 4]
    return pieces or strokes[:1]


# Digits turned until they are none: the near misses that show the detector where digits end.
# Turned half way, 6 and 9 are each other, and 0, 1, 2, 5 and 8 look much the same, so those
# are left out; on their side, 5, 6 and 9 (slanted as people slant) can still read as digits.
_TURNS = {"mirror": (3, 4, 6, 7, 9), "half": (3, 4, 7), "quarter": (2, 3, 4, 7)}


def _turned_digit(rng: np.random.Generator) -> list[Polyline]:
    """A digit mirrored, upside down or on its side."""
    turn = str(rng.choice(list(_TURNS)))
    strokes = digit_template(rng, _TURNS[turn])
    side = 1.0 if rng.random() < 0.5 else -1.0

    def moved(x: float, y: float) -> tuple[float, float]:
        x, y = x - 0.5, y - 0.5
        if turn == "mirror":
            return 0.5 - x, 0.5 + y
        if turn == "half":
            return 0.5 - x, 0.5 - y
        return 0.5 - side * y, 0.5 + side * x

    return [[moved(x, y) for x, y in stroke] for stroke in strokes]


def _multi_digit(rng: np.random.Generator) -> list[Polyline]:
    """Two or three digits side by side (or stacked) in one box."""
    count = int(rng.integers(2, 4))
    stacked = rng.random() < 0.2
    strokes: list[Polyline] = []
    for k in range(count):
        dx, dy = (0.0, 1.1 * k) if stacked else (0.75 * k + float(rng.uniform(-0.05, 0.1)), 0.0)
        strokes += [[(x * 0.6 + dx, y + dy) for x, y in s] for s in digit_template(rng)]
    return strokes


STROKE_MAKERS: dict[str, Callable[[np.random.Generator], list[Polyline]]] = {
    "scribble": _scribble,
    "zigzag": _zigzag,
    "shape": _shape,
    "glyph": _glyph,
    "character": _character,
    "digit_piece": _digit_piece,
    "turned_digit": _turned_digit,
    "multi_digit": _multi_digit,
}
STROKE_FAMILIES = tuple(STROKE_MAKERS)


def draw_strokes(
    strokes: Sequence[Polyline],
    rng: np.random.Generator,
    size: int = CANVAS_SIZE,
    turn: float = 0.5,
) -> Image.Image:
    """Strokes (any box) drawn on a canvas like `canvas.render_template`: a random size, place,
    slant, rotation (up to `turn` radians) and brush, in one of the canvas styles."""
    segments = template_segments(strokes)
    if len(segments) == 0:
        segments = np.zeros((1, 2, 2), dtype=np.float32)
    points = segments.reshape(-1, 2)
    low, high = points.min(axis=0), points.max(axis=0)
    span = float(max(high - low)) or 1.0
    segments = (segments - (low + high) / 2) / span
    angle = float(rng.uniform(-turn, turn))
    shear = float(rng.uniform(-0.3, 0.3))
    rotate = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    segments = segments @ rotate.T.astype(np.float32)
    segments[..., 0] -= shear * segments[..., 1]
    segments[..., 0] *= float(rng.uniform(0.75, 1.25))
    height = float(rng.uniform(0.3, 0.85)) * size
    brush = float(np.clip(rng.uniform(0.04, 0.12) * height, 4.0 * size / CANVAS_SIZE, 40.0))
    half = height / 2 + brush
    centre = (
        float(rng.uniform(half * 0.8, max(half * 0.8, size - half * 0.8))),
        float(rng.uniform(half * 0.8, max(half * 0.8, size - half * 0.8))),
    )
    segments = segments * height + np.array(centre, dtype=np.float32)
    style = str(rng.choice(STYLES, p=STYLE_WEIGHTS))
    return compose(draw_mask(segments, size=size, brush=brush), style, rng)
