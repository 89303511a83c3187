"""When a report may state a verdict ("latent ODE below RNN", "CNF at or below NF", a correlation).

A verdict always states its sample size, and is withheld below a minimum that the withholding sentence names:
:data:`MIN_SEEDS` seeds on each side of a comparison of means, :data:`MIN_POINTS` points for a correlation.
Measurements themselves (means, ranges, fitted slopes) are always shown; only the yes/no reading is withheld.
"""

from __future__ import annotations

__all__ = ["MIN_SEEDS", "MIN_POINTS", "enough_seeds", "enough_points", "seeds_withheld", "points_withheld"]

#: Seeds each side of a comparison needs before the report says which side is lower.
MIN_SEEDS = 3
#: Points a correlation (Pearson's r) needs before the report states it (two points always give |r| = 1).
MIN_POINTS = 3


def enough_seeds(*counts: int) -> bool:
    """Whether every side of a comparison has at least :data:`MIN_SEEDS` seeds."""
    return bool(counts) and all(c >= MIN_SEEDS for c in counts)


def enough_points(count: int) -> bool:
    """Whether a correlation over ``count`` points may be stated."""
    return count >= MIN_POINTS


def seeds_withheld(*counts: int) -> str:
    """``"withheld: 1 and 1 seeds (needs at least 3 each)"``."""
    have = " and ".join(str(c) for c in counts)
    return f"withheld: {have} seed{'s' if counts != (1,) else ''} (needs at least {MIN_SEEDS} each)"


def points_withheld(count: int) -> str:
    """``"withheld: 2 points (needs at least 3)"``."""
    return f"withheld: {count} point{'s' if count != 1 else ''} (needs at least {MIN_POINTS})"
