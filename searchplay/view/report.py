"""`searchplay report`: the viewer's page and a run's data in one HTML file, to share or archive.

It holds what the server would answer (run summaries, metric columns, every logged trajectory
of the chosen steps in full, the pool, the evaluations and each one compared with the first),
so the page works from the file alone, offline. Its size is about that of the step files it
embeds plus 4.7 MB of plotly.js.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from searchplay.eval.report import CompareError, compare
from searchplay.jsonl import atomic_write
from searchplay.view.app import eval_summary
from searchplay.view.page import report_page
from searchplay.view.run_data import RunData, RunViewError, open_runs


def _trajectories(run: RunData, chosen: list[int]) -> dict[str, dict[str, Any]]:
    return {
        str(step): {
            "rows": run.step_file(step).rows,
            "details": [run.trajectory(step, i) for i in range(len(run.step_file(step).rows))],
        }
        for step in chosen
    }


def report_data(run_dirs: list[Path], eval_dirs: list[Path], last_steps: int | None = None) -> dict[str, Any]:
    runs = open_runs(run_dirs)
    summaries = [r.summary() for r in runs]
    bad = [s for s in summaries if "error" in s]
    if bad:
        raise RunViewError("; ".join(s["error"] for s in bad))
    steps = [r.steps()[-last_steps:] if last_steps else r.steps() for r in runs]
    comparisons: dict[str, str] = {}
    for b in range(1, len(eval_dirs)):
        try:
            comparisons[f"0-{b}"] = compare(eval_dirs[0], eval_dirs[b])
        except CompareError as e:
            comparisons[f"0-{b}"] = f"not comparable: {e}"
    return {
        "written": time.strftime("%Y-%m-%d %H:%M"),
        "runs": summaries,
        "metrics": [r.metrics() for r in runs],
        "steps": steps,
        "trajectories": [_trajectories(r, [s["step"] for s in chosen]) for r, chosen in zip(runs, steps)],
        "pool": [r.pool_rows() for r in runs],
        "evals": [eval_summary(p) for p in eval_dirs],
        "compare": comparisons,
    }


def write_report(run_dirs: list[Path], eval_dirs: list[Path], out: Path, last_steps: int | None = None) -> int:
    """Write the report to `out` all at once (a reader never sees half a file); returns its size in bytes."""
    page = report_page(report_data(run_dirs, eval_dirs, last_steps)).encode()
    atomic_write(out, page)
    return len(page)
