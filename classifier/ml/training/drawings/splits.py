"""Train and validation sets of real drawings, split by who drew them, never by drawing.

A writer's digits look alike: a model validated on digits of writers it trained on is judged on
handwriting it has seen. The pen digits are split by writer; the doodles and symbols, whose
players are anonymous, by what was drawn (word or symbol), so the held-out ones are things the
detector never saw. Seeded and independent of file order: the same seed gives the same split.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

# The share of writers (words, symbols) held out by default.
HELD_OUT_SHARE = 0.2

T = TypeVar("T")


@dataclass(frozen=True)
class GroupSplit:
    """The groups (writers, words, symbols) that train and those held out, disjoint."""

    train: frozenset
    held_out: frozenset


def split_groups(
    groups: Iterable[Hashable], held_out: float | int = HELD_OUT_SHARE, seed: int = 0
) -> GroupSplit:
    """The distinct `groups` split at random (seeded): `held_out` of them held out, a share in
    (0, 1) or a count; at least one on each side when there are two or more."""
    distinct = sorted(set(groups), key=lambda g: (str(type(g)), g))
    if isinstance(held_out, float) and not 0.0 < held_out < 1.0:
        raise ValueError(f"A held-out share is between 0 and 1, not {held_out}.")
    count = round(held_out * len(distinct)) if isinstance(held_out, float) else int(held_out)
    if len(distinct) >= 2:
        count = min(max(count, 1), len(distinct) - 1)
    order = np.random.default_rng(seed).permutation(len(distinct))
    chosen = frozenset(distinct[i] for i in order[:count])
    return GroupSplit(frozenset(distinct) - chosen, chosen)


def split_by(
    items: Sequence[T],
    key: Callable[[T], Hashable],
    held_out: float | int = HELD_OUT_SHARE,
    seed: int = 0,
) -> tuple[list[T], list[T]]:
    """`items` split by `key` (`split_groups`): (train, held out), each in the items' order."""
    split = split_groups((key(item) for item in items), held_out, seed)
    return (
        [item for item in items if key(item) in split.train],
        [item for item in items if key(item) in split.held_out],
    )


def split_pendigits(digits: Sequence, validation: float | int = HELD_OUT_SHARE, seed: int = 0):
    """Pen digits (`pendigits.PenDigit`) into (train, validation) by writer."""
    return split_by(digits, lambda d: d.writer, validation, seed)


def split_doodles(doodles: Sequence, held_out: float | int = HELD_OUT_SHARE, seed: int = 0):
    """Quick, Draw! doodles (`quickdraw.Doodle`) into (train, held out) by word."""
    return split_by(doodles, lambda d: d.word, held_out, seed)


def split_symbols(drawings: Sequence, held_out: float | int = HELD_OUT_SHARE, seed: int = 0):
    """Symbol drawings (`symbols.SymbolDrawing`) into (train, held out) by symbol."""
    return split_by(drawings, lambda d: d.name, held_out, seed)
