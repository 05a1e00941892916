"""Damaged or odd run records the viewer and report must survive (reliability v3, findings 4 and 9): non-finite
metrics (a diverging run) are gaps, never a 500 or a refused report, and the trainer writes them as strict JSON; a
stray file among the step files is named, not a 500. On the session's real tiny runs (tests/conftest.py `runs`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import orjson

from searchplay.config import Config
from searchplay.train.logging import MetricsLogger
from searchplay.train.run_dir import RunDir
from searchplay.view.app import create_app
from searchplay.view.report import write_report
from searchplay.web import running_server


def test_non_finite_metrics_of_a_diverging_run_are_gaps_not_errors(runs: dict[str, Path], tmp_path: Path) -> None:
    run = shutil.copytree(runs["plain"], tmp_path / "diverged")
    with (run / "metrics.jsonl").open("a") as f:  # what json.dumps writes for a diverging loss
        f.write(json.dumps({"step": 4, "solver/acc": float("nan"), "proposer/valid_rate": float("inf"), "time": 1.0}) + "\n")
    with running_server(create_app([run], [])) as base:
        response = httpx.get(f"{base}/api/metrics", params={"run": 0})
    assert response.status_code == 200, response.text
    columns = response.json()
    assert columns["steps"][-1] == 4 and columns["series"]["solver/acc"][-1] is None
    assert columns["series"]["proposer/valid_rate"][-1] is None and columns["series"]["solver/acc"][0] is not None
    assert write_report([run], [], tmp_path / "report.html") > 0  # the report reads the same records


def test_the_trainer_writes_non_finite_metrics_as_strict_json(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.create(Config())
    logger = MetricsLogger(run, Config(), 1)
    logger.log(1, {"learner/loss": float("nan"), "learner/grad_norm": float("inf"), "solver/acc": 0.5})
    logger.close()
    record = orjson.loads(run.metrics.read_bytes())  # strict JSON: no NaN literal
    assert (record["learner/loss"], record["learner/grad_norm"], record["solver/acc"]) == ("nan", "inf", 0.5)


def test_a_stray_step_file_is_named_not_a_500(runs: dict[str, Path], tmp_path: Path) -> None:
    """Reliability v3, finding 9: trajectories/step-abc.jsonl made /api/steps answer 500 and the report die."""
    run = shutil.copytree(runs["plain"], tmp_path / "stray")
    (run / "trajectories" / "step-abc.jsonl").write_text("not a step\n")
    with running_server(create_app([run], [])) as base:
        steps = httpx.get(f"{base}/api/steps", params={"run": 0})
        summary = httpx.get(f"{base}/api/runs").json()[0]
    assert steps.status_code == 200, steps.text
    assert [s["step"] for s in steps.json()] == [1, 2, 3] and summary["stray_files"] == ["step-abc.jsonl"]
    assert write_report([run], [], tmp_path / "report.html") > 0
