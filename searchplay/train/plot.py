"""Training curves of one or more runs as a PNG: what a user looks at to see self-play learn.

Panels (each drawn when its series exist): solver accuracy and reward, proposer valid-question
and verification pass rates, rewards of both roles, KL to the reference, the training/inference
log-prob gap, the periodic evaluation (EM, cover EM, F1), the probe questions, the game's health
(learnable fraction, query diversity per role) and the answers' length. Series are read from each run's
`metrics.jsonl`; several runs are overlaid, one colour each, with an optional moving average.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator

PANELS: list[tuple[str, list[tuple[str, str]]]] = [
    ("solver", [("solver/acc", "accuracy (full credit)"), ("solver/reward_mean", "reward")]),
    ("questions", [("proposer/valid_rate", "valid-question rate"), ("verify/pass_rate", "verification pass rate")]),
    ("rewards", [("proposer/reward_mean", "proposer reward"), ("solver/reward_mean", "solver reward")]),
    ("KL to reference", [("solver_update/kl", "solver"), ("proposer_update/kl", "proposer"), ("update/kl", "combined")]),
    (
        "log-prob gap (rollout vs learner)",
        [
            ("solver_update/logprob_gap_mean", "solver mean"),
            ("proposer_update/logprob_gap_mean", "proposer mean"),
            ("update/logprob_gap_mean", "combined mean"),
        ],
    ),
    ("periodic evaluation", [("eval/em", "EM"), ("eval/cover_em", "cover EM"), ("eval/f1", "F1")]),
    ("probe questions", [("probe/reward", "reward"), ("probe/em", "EM")]),
    (
        "links of the chain (evaluation)",
        [
            ("eval/reading_accuracy", "reading, given the answer passage"),
            ("eval/search_recall", "own searches find the answer"),
            ("eval/question_recall", "the raw question finds it"),
        ],
    ),
    (
        "game health",
        [
            ("proposer/learnable_fraction", "learnable questions (0 < s < 1)"),
            ("solver/query_diversity", "solver query diversity"),
            ("proposer/query_diversity", "proposer query diversity"),
        ],
    ),
    ("answer form", [("solver/answer_words", "median answer words"), ("probe/answer_words", "probe answer words")]),
]
STYLES = ["-", "--", ":", "-."]
PLOT_MARKER = "searchplay plot"  # in the PNG's Software field: how `plot --out` knows a file it may replace


class PlotError(ValueError):
    """A run directory without metrics to plot."""


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        raise PlotError(f"{run_dir} has no metrics.jsonl: not a run directory, or no step has finished yet")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        raise PlotError(f"{path} is empty: no step has finished yet")
    return rows


def smooth(values: list[float], window: int) -> list[float]:
    """Trailing moving average over `window` points (1 = as is)."""
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def plot_runs(run_dirs: list[Path], out: Path, window: int = 1, labels: list[str] | None = None) -> list[str]:
    """Write the PNG; returns the titles of the panels drawn."""
    runs = [(labels[i] if labels else d.name, read_metrics(d)) for i, d in enumerate(run_dirs)]
    panels = [(title, series) for title, series in PANELS if any(k in r for _, rows in runs for r in rows for k, _ in series)]
    if not panels:
        raise PlotError("none of the plotted series occur in the metrics")
    cols = 2
    fig, axes = plt.subplots(
        (len(panels) + cols - 1) // cols, cols, figsize=(12, 3.4 * ((len(panels) + 1) // cols)), squeeze=False
    )
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, (title, series) in zip(axes.flat, panels):
        for r, (name, rows) in enumerate(runs):
            for s, (key, label) in enumerate(series):
                points = [(row["step"], float(row[key])) for row in rows if key in row]
                if not points:
                    continue
                steps, values = zip(*points)
                window_here = 1 if key.startswith("eval/") else window
                # one run: a colour per series; several: a colour per run and a line style per series
                colour = colours[(r if len(runs) > 1 else s) % len(colours)]
                ax.plot(
                    steps,
                    smooth(list(values), window_here),
                    STYLES[s % len(STYLES)],
                    color=colour,
                    marker="o" if len(points) < 30 else None,
                    markersize=3,
                    label=f"{label}" + (f" ({name})" if len(runs) > 1 else ""),
                )
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    suffix = f", moving average over {window} steps" if window > 1 else ""
    fig.suptitle(f"{', '.join(name for name, _ in runs)}{suffix}")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110, metadata={"Software": PLOT_MARKER})
    plt.close(fig)
    return [title for title, _ in panels]
