"""One evaluation on disk: predictions written as they come, resumable, infrastructure failures visible.

For each dataset, `predictions-<name>.jsonl` grows by one line per question as each batch
finishes, so a killed evaluation keeps what it did and `resume=True` skips the questions already
there (a line torn by the kill is dropped). When a dataset is done, the judge (if any) decides
the inexact answers, the file is rewritten with the verdicts, and the report is computed from it.
If every one of the first `fail_fast_after` questions hit a retriever error, the run stops with
`EvalError`: a retriever that is down must not produce an ordinary-looking table of zeros.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from searchplay.config import RolloutConfig
from searchplay.eval.evaluate import Prediction, evaluate, judge_predictions
from searchplay.eval.report import dataset_report, summary_markdown
from searchplay.jsonl import DamagedLineError, append_jsonl, read_appended, write_jsonl
from searchplay.judge.llm_judge import LLMJudge
from searchplay.llm.base import Engine
from searchplay.outdir import RUN_FILES, WRITER_LOCK, check_output_dir, single_writer
from searchplay.search.base import Retriever

SETTINGS_FILE = "eval-settings.json"  # written first: marks an evaluation folder as ours, checked on resume


class EvalError(RuntimeError):
    """An evaluation that cannot give a meaningful result; the message says why and what to do."""


@contextlib.contextmanager
def open_eval_dir(out_dir: Path, settings: dict[str, Any], resume: bool, overwrite: bool) -> Iterator[None]:
    """Make `out_dir` ready for an evaluation with `settings` and hold its writer lock while the block runs, or
    say why not (nothing is touched then).

    A finished evaluation is replaced only with `overwrite`; an unfinished one is continued only
    with `resume` and the same settings; a second evaluation writing the same folder is refused.
    Raises OutputDirError for a folder we did not write or that another process is writing.
    """
    check_output_dir(out_dir, ("summary.json", SETTINGS_FILE, WRITER_LOCK), "evaluation", RUN_FILES)
    with single_writer(out_dir, "evaluation"):
        if (out_dir / "summary.json").exists() and not overwrite:
            raise EvalError(f"{out_dir} already holds an evaluation; pass --overwrite to replace it, or choose another --out")
        saved = out_dir / SETTINGS_FILE
        if resume and saved.is_file() and (before := json.loads(saved.read_text())) != settings:
            changed = {k: (before.get(k), v) for k, v in settings.items() if before.get(k) != v}
            raise EvalError(f"--resume with other settings than the evaluation in {out_dir}: {changed} (was, now)")
        if saved.exists() and not resume and not overwrite:
            raise EvalError(
                f"{out_dir} holds an unfinished evaluation; continue it with --resume, or pass --overwrite to start again"
            )
        (out_dir / "summary.json").unlink(missing_ok=True)  # ours (--overwrite): the new summary replaces it at the end
        saved.write_text(json.dumps(settings, indent=2))
        yield


def write_summary(out_dir: Path, summary: dict[str, Any], title: str) -> str:
    """summary.json (written last: its presence marks a finished evaluation) and summary.md; returns the markdown."""
    markdown = summary_markdown(summary, title)
    (out_dir / "summary.md").write_text(markdown)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return markdown


def predictions_path(out_dir: Path, label: str) -> Path:
    return out_dir / f"predictions-{label}.jsonl"


def read_done(path: Path) -> list[dict[str, Any]]:
    """Prediction records already written. Only a last line torn by a kill is dropped (and cut from the
    file); a damaged line anywhere else stops with file and line, since cutting there would delete the
    good predictions after it."""
    if not path.is_file():
        return []
    try:
        records, good = read_appended(path, _prediction_problem)
    except DamagedLineError as e:
        raise EvalError(
            f"{e}; {e.following} predictions follow it. Repair or delete that line, then run again with --resume "
            "(nothing was changed)"
        ) from None
    if good < path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(good)
    return records


def _prediction_problem(record: Any) -> str | None:
    return None if isinstance(record, dict) and "id" in record else "not a prediction record"


def run_dataset(
    engine: Engine,
    retriever: Retriever,
    label: str,
    records: list[dict[str, Any]],
    rollout: RolloutConfig,
    topk: int,
    out_dir: Path,
    batch_size: int = 16,
    temperature: float = 0.0,
    resume: bool = False,
    judge: LLMJudge | None = None,
    advance: Callable[[int], None] | None = None,
    fail_fast_after: int = 16,
) -> dict[str, Any]:
    """Evaluate one dataset into `out_dir`; returns its report (with questions_per_minute of this session)."""
    path = predictions_path(out_dir, label)
    if not resume:
        path.unlink(missing_ok=True)
    done = read_done(path)
    seen = {r["id"] for r in done}
    todo = [r for r in records if str(r["id"]) not in seen]
    if advance:
        advance(len(records) - len(todo))
    first = {"seen": 0, "failed": 0}

    def write(batch: list[Prediction]) -> None:
        rows = [p.to_dict() for p in batch]
        append_jsonl(path, rows)
        for r in rows:
            if first["seen"] < fail_fast_after:
                first["seen"] += 1
                first["failed"] += r["trajectory"]["search_errors"] > 0
        if first["seen"] == min(fail_fast_after, len(todo)) and first["failed"] == first["seen"] > 0:
            raise EvalError(
                f"{label}: every one of the first {first['seen']} questions hit a retriever error "
                f"(see {path}); fix the retriever, then continue with --resume"
            )
        if advance:
            advance(len(batch))

    t0 = time.perf_counter()
    evaluate(engine, retriever, todo, rollout, topk, batch_size, temperature, on_batch=write)
    minutes = (time.perf_counter() - t0) / 60
    order = {str(r["id"]): i for i, r in enumerate(records)}
    rows = sorted(read_done(path), key=lambda r: order.get(r["id"], len(order)))
    judged = judge_predictions(judge, rows) if judge is not None else None
    if judged is not None:
        rows = [{**r, "judge": v} for r, v in zip(rows, judged)]
        write_jsonl(rows, path)
    report = dataset_report(rows, judged, judge.cfg.model if judge else "")
    report["questions_per_minute"] = len(todo) / minutes if minutes and todo else 0.0
    return report
