"""Bootstrap confidence intervals: for one system's accuracy, and paired for a difference.

Percentile bootstrap with a seeded generator: resample questions with replacement, recompute
the mean, take the 2.5th and 97.5th percentiles. The paired version resamples the same
question indices for both systems, so per-question difficulty cancels out.
"""

from __future__ import annotations

import numpy as np


def bootstrap_ci(values: list[float], n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> tuple[float, float]:
    if not values:
        return (0.0, 0.0)
    x = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def paired_bootstrap(a: list[float], b: list[float], n_boot: int = 2000, alpha: float = 0.05, seed: int = 0) -> dict[str, float]:
    """Difference b - a of paired per-question scores, its interval, and questions won/lost by b."""
    if len(a) != len(b):
        raise ValueError(f"paired scores need equal lengths, got {len(a)} and {len(b)}")
    diff = np.asarray(b, dtype=np.float64) - np.asarray(a, dtype=np.float64)
    lo, hi = bootstrap_ci(diff.tolist(), n_boot, alpha, seed)
    return {
        "diff": float(diff.mean()) if len(diff) else 0.0,
        "lo": lo,
        "hi": hi,
        "won": int((diff > 0).sum()),
        "lost": int((diff < 0).sum()),
        "n": len(diff),
    }
