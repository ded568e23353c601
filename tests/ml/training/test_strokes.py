"""Non-digits drawn stroke by stroke."""

from __future__ import annotations

import numpy as np

from classifier.ml.training.strokes import STROKE_MAKERS


def test_invented_characters_are_several_joined_smooth_strokes() -> None:
    counts, joined = [], 0
    for seed in range(200):
        strokes = STROKE_MAKERS["character"](np.random.default_rng(seed))
        assert 1 <= len(strokes) <= 5
        assert all(len(stroke) >= 2 for stroke in strokes)
        assert np.isfinite(np.concatenate([np.asarray(s) for s in strokes])).all()
        counts.append(len(strokes))
        # A later stroke that starts on a point of an earlier one is joined to it.
        points = [set(stroke) for stroke in strokes]
        joined += any(
            any(p in points[j] for p in strokes[k])
            for k in range(1, len(strokes))
            for j in range(k)
        )
    assert np.mean(counts) > 2 and joined > 60
    # A single stroke is never a bare line: curves are smoothed into many points.
    singles = [STROKE_MAKERS["character"](np.random.default_rng(s)) for s in range(200)]
    assert all(len(c[0]) >= 5 for c in singles if len(c) == 1)
