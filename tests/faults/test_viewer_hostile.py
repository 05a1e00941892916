"""The run viewer against damaged and hostile run folders (reliability v2, finding 8).

Synthetic run folders written by the test, served by the real viewer app on 127.0.0.1: lines of
the wrong shape and files of NUL bytes are errors naming file and line; one bad evaluation folder
is reported alone; a link out of the run folder is refused; concurrent requests for one step file
share one parse; a metric name holding markup stays text in a real browser's legend.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from searchplay.view import run_data
from searchplay.view.app import create_app
from searchplay.web import running_server
from tests.test_view import BROWSER_ARGS, CHROMIUM, _open, browser  # noqa: F401 (the browser fixture)

RECORD = {"meta": {"id": "q1", "role": "solver", "question": "Who?", "reward": 1.0}, "turns": [], "final": "x"}


def make_run(root: Path, step_lines: list[str], metrics: list[dict[str, Any]] | None = None) -> Path:
    (root / "trajectories").mkdir(parents=True)
    (root / "config.toml").write_text('[model]\npath = "bundled"\n')
    rows = metrics or [{"step": 1, "solver/reward": 0.5}]
    (root / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "trajectories" / "step-000001.jsonl").write_text("".join(line + "\n" for line in step_lines))
    return root


@pytest.fixture
def served() -> Iterator[Any]:
    def serve(runs: list[Path], evals: list[Path] | None = None) -> Any:
        return running_server(create_app(runs, evals))

    yield serve


@pytest.mark.parametrize("bad", ["[1, 2, 3]", '{"meta": "a string"}', '{"turns": [1, 2]}', '{"turns": [{"hits": 7}]}'])
def test_a_line_of_the_wrong_shape_is_named_with_file_and_line(tmp_path: Path, served: Any, bad: str) -> None:
    run = make_run(tmp_path / "run", [json.dumps(RECORD), bad, json.dumps(RECORD)])
    with served([run]) as base:
        r = httpx.get(f"{base}/api/trajectories", params={"step": 1})
    assert r.status_code == 500
    assert f"{run / 'trajectories' / 'step-000001.jsonl'}, line 2: not a trajectory record" in r.json()["error"]


def test_a_file_of_nul_bytes_is_damaged_not_empty(tmp_path: Path, served: Any) -> None:
    run = make_run(tmp_path / "run", [])
    (run / "trajectories" / "step-000001.jsonl").write_bytes(b"\0" * 4_000_000)
    with served([run]) as base:
        r = httpx.get(f"{base}/api/trajectories", params={"step": 1})
    assert r.status_code == 500 and "line 1: not a JSON record" in r.json()["error"]


def test_a_write_in_progress_is_still_skipped(tmp_path: Path, served: Any) -> None:
    run = make_run(tmp_path / "run", [json.dumps(RECORD)])
    with open(run / "trajectories" / "step-000001.jsonl", "a") as f:
        f.write('{"meta": {"id": "tor')
    with served([run]) as base:
        assert httpx.get(f"{base}/api/trajectories", params={"step": 1}).json()["total"] == 1


def test_one_bad_evaluation_folder_is_reported_alone(tmp_path: Path, served: Any) -> None:
    good, bad = tmp_path / "good", tmp_path / "bad"
    for folder in (good, bad):
        folder.mkdir()
    (good / "summary.json").write_text(json.dumps({"model": "m", "datasets": {"nq": {"em": 0.1, "n": 10}}}))
    (bad / "summary.json").write_text('{"model": "m", "datas')
    run = make_run(tmp_path / "run", [json.dumps(RECORD)])
    with served([run], [good, bad]) as base:
        r = httpx.get(f"{base}/api/evals")
        compared = httpx.get(f"{base}/api/compare", params={"a": 0, "b": 1})
    assert r.status_code == 200
    assert r.json()[0]["summary"]["datasets"]["nq"]["em"] == 0.1
    assert "error" in r.json()[1] and str(bad / "summary.json") in r.json()[1]["error"]
    assert compared.status_code == 422 and str(bad / "summary.json") in compared.json()["error"]


def test_a_link_out_of_the_run_folder_is_refused(tmp_path: Path, served: Any) -> None:
    secret = tmp_path / "secret.jsonl"
    secret.write_text('{"step": 1, "stolen/value": 42}\n')
    run = make_run(tmp_path / "run", [json.dumps(RECORD)])
    (run / "metrics.jsonl").unlink()
    (run / "metrics.jsonl").symlink_to(secret)
    (run / "trajectories" / "step-000002.jsonl").symlink_to(secret)
    with served([run]) as base:
        metrics = httpx.get(f"{base}/api/metrics")
        step = httpx.get(f"{base}/api/trajectories", params={"step": 2})
    assert metrics.status_code == 403 and "leads out of" in metrics.json()["error"]
    assert step.status_code == 403 and "42" not in step.text


def test_concurrent_requests_for_one_step_file_share_one_parse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = make_run(tmp_path / "run", [json.dumps({**RECORD, "pad": "x" * 2000})] * 3000)  # 6 MB
    parses = []

    class CountedStepFile(run_data.StepFile):
        def __init__(self, path: Path):
            parses.append(path)
            super().__init__(path)

    monkeypatch.setattr(run_data, "StepFile", CountedStepFile)  # counts the real parser's runs
    data = run_data.RunData(run)
    threads = [threading.Thread(target=data.step_file, args=(1,)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(parses) == 1
    assert len(data.step_file(1).rows) == 3000


@pytest.mark.browser
def test_a_metric_name_with_markup_stays_text(browser: Any, tmp_path: Path) -> None:  # noqa: F811
    name = 'evil/<a href="https://attacker.example">click</a>'
    rows = [{"step": 1, name: 1.0, "evil/other": 0.0}, {"step": 2, name: 2.0, "evil/other": 1.0}]  # two: a legend
    run = make_run(tmp_path / "run", [json.dumps(RECORD)], rows)
    with running_server(create_app([run])) as base:
        page = _open(browser, base)
        chart = page.locator(".chart[data-group='evil']")
        assert chart.locator("a").count() == 0  # before: the name became a link in the legend
        assert any("<a href" in t for t in chart.locator(".legendtext").all_text_contents())
