"""The run viewer (`searchplay view` / `report`) over real runs of the tiny config.

Two runs are trained once per session: `plain` (verifier off, so the pool grows) and `verified`
(the policy verifier with noisy documents and a word minimum, so proposals are rejected by a
rule filter and by verification). The API is exercised through a real server on 127.0.0.1; the
browser tests drive Debian's headless Chromium with Playwright and skip without it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from itertools import groupby
from pathlib import Path
from typing import Any

import httpx
import pytest
from transformers import AutoTokenizer

from searchplay.assets.tiny import tiny_model_dir
from searchplay.eval.report import compare
from searchplay.game.pool import PoolError, QuestionPool
from searchplay.jsonl import gzip_record
from searchplay.view.app import create_app
from searchplay.view.report import write_report
from searchplay.web import running_server

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run"]  # fmt: skip


@pytest.fixture(scope="session")
def url(runs: dict[str, Path]) -> Iterator[str]:
    evals = [ROOT / "docs/baselines/bm25", ROOT / "docs/baselines/closed-book"]
    with running_server(create_app([runs["plain"], runs["verified"]], evals)) as base:
        yield base


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_runs_and_metric_columns_match_the_run_directory(url: str, runs: dict[str, Path]) -> None:
    summary = httpx.get(f"{url}/api/runs").json()
    assert [r["name"] for r in summary] == ["plain", "verified"]
    assert summary[0]["model"] == "tiny-random" and summary[0]["last_step"] == 3 and summary[0]["trajectory_steps"] == 3
    columns = httpx.get(f"{url}/api/metrics", params={"run": 0}).json()
    logged = _lines(runs["plain"] / "metrics.jsonl")
    assert columns["steps"] == [m["step"] for m in logged]
    assert columns["series"]["solver/acc"] == [m["solver/acc"] for m in logged]
    assert "time" not in columns["series"]


def test_a_run_whose_records_are_gzipped_reads_as_the_plain_one(runs: dict[str, Path], tmp_path: Path) -> None:
    """Study records are committed gzipped (the repo travels to a GPU check of at most 64 MiB): the viewer, the
    report and the eval comparison read `.jsonl.gz` as they read `.jsonl`."""
    run = shutil.copytree(runs["verified"], tmp_path / "gzipped")
    for step_file in (run / "trajectories").glob("step-*.jsonl"):
        gzip_record(step_file)
    evals = []
    for name in ("bm25", "closed-book"):
        evals.append(shutil.copytree(ROOT / "docs/baselines" / name, tmp_path / name))
        for predictions in evals[-1].glob("predictions-*.jsonl"):
            gzip_record(predictions)
    assert not list(run.glob("trajectories/*.jsonl")) and not list(evals[0].glob("*.jsonl"))
    with running_server(create_app([runs["verified"], run], [])) as base:
        for what, params in (("steps", {}), ("trajectories", {"step": 3}), ("trajectory", {"step": 3, "index": 0})):
            plain, packed = (httpx.get(f"{base}/api/{what}", params={"run": i, **params}) for i in (0, 1))
            assert packed.status_code == 200 and plain.status_code == 200, packed.text
            if what == "steps":
                assert [s["step"] for s in packed.json()] == [s["step"] for s in plain.json()] == [1, 2, 3]
            else:
                assert packed.json() == plain.json()
    table = compare(*evals).split("\n", 1)[1]  # below the title, which names the folders
    assert table == compare(ROOT / "docs/baselines/bm25", ROOT / "docs/baselines/closed-book").split("\n", 1)[1]
    assert write_report([run], [], tmp_path / "report.html") > 0


def test_trajectory_pages_filter_sort_and_slice_on_the_server(url: str, runs: dict[str, Path]) -> None:
    logged = _lines(runs["plain"] / "trajectories" / "step-000002.jsonl")
    page = httpx.get(f"{url}/api/trajectories", params={"run": 0, "step": 2, "limit": 3, "offset": 2}).json()
    assert page["total"] == len(logged) and [r["id"] for r in page["rows"]] == [t["meta"]["id"] for t in logged[2:5]]
    solvers = httpx.get(f"{url}/api/trajectories", params={"step": 2, "role": "solver", "sort": "reward", "desc": 1}).json()
    assert solvers["total"] == sum(t["meta"]["role"] == "solver" for t in logged)
    rewards = [r["reward"] for r in solvers["rows"]]
    assert rewards == sorted(rewards, reverse=True) and all(r["role"] == "solver" for r in solvers["rows"])
    word = logged[0]["meta"]["question"].split()[0]
    found = httpx.get(f"{url}/api/trajectories", params={"step": 2, "q": word.upper()}).json()
    assert found["total"] >= 1 and all(word.lower() in json.dumps(r).lower() for r in found["rows"])


def test_trajectory_detail_separates_trained_from_inserted_tokens(url: str, runs: dict[str, Path]) -> None:
    record = _lines(runs["plain"] / "trajectories" / "step-000001.jsonl")[0]
    d = httpx.get(f"{url}/api/trajectory", params={"run": 0, "step": 1, "index": 0}).json()
    assert d["mask_known"] and d["id"] == record["meta"]["id"]
    assert [s[1] for s in d["segments"]] == [k for k, _ in groupby(record["loss_mask"])]  # one run per mask change
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir())
    assert "".join(s[0] for s in d["segments"]) == tokenizer.decode(record["response_ids"], skip_special_tokens=False)
    assert {0, 1} <= {s[1] for s in d["segments"]}  # a search episode has both: sampled text and retrieved documents
    assert d["turns"][0]["action"] == "search" and d["turns"][0]["hits"]
    assert d["advantage"] == record["meta"]["advantage"] and d["prompt_text"]


def test_rejected_proposals_name_their_reason_and_the_verifier_input(url: str, runs: dict[str, Path]) -> None:
    rows = [
        r
        for step in (1, 2, 3)
        for r in httpx.get(f"{url}/api/trajectories", params={"run": 1, "step": step, "role": "proposer"}).json()["rows"]
    ]
    reasons = {r["rejection"] for r in rows}
    assert "verification_failed" in reasons and "too_short" in reasons, reasons
    failed = next(r for r in rows if r["rejection"] == "verification_failed")
    step = int(failed["id"].split("-")[0].removeprefix("step"))
    d = httpx.get(f"{url}/api/trajectory", params={"run": 1, "step": step, "id": failed["id"]}).json()
    assert d["verdict"] == "mismatch" and d["passed"] is False
    own = {h["id"] for t in d["turns"] for h in t["hits"]}
    assert d["evidence"] and all(e["id"] in own and e["text"] for e in d["evidence"])
    assert d["noisy"] and all(n["id"] not in own and n["title"] for n in d["noisy"])


def test_pool_lists_every_question_with_provenance_and_cleared_ones(url: str, runs: dict[str, Path]) -> None:
    events = _lines(runs["plain"] / "pool.jsonl")
    added = [e for e in events if e["type"] == "question"]
    page = httpx.get(f"{url}/api/pool", params={"run": 0, "limit": 500}).json()
    assert page["total"] == len(added) and {r["id"] for r in page["rows"]} == {e["id"] for e in added}
    cleared = httpx.get(f"{url}/api/pool", params={"run": 0, "status": "cleared", "limit": 500}).json()
    kept = httpx.get(f"{url}/api/pool", params={"run": 0, "status": "in_pool", "limit": 500}).json()
    assert cleared["total"] > 0 and kept["total"] > 0 and cleared["total"] + kept["total"] == len(added)
    assert all(r["cleared_step"] == 2 for r in cleared["rows"])
    by_step = httpx.get(f"{url}/api/pool", params={"run": 0, "sort": "step", "desc": 1}).json()["rows"]
    assert [r["step"] for r in by_step] == sorted((r["step"] for r in by_step), reverse=True)
    assert all(r["proposer_trajectory"] and r["reused"] == r["attempts"] - 1 for r in by_step)


@pytest.mark.parametrize(
    ("path", "params", "status", "words"),
    [
        ("/api/pool", {"sort": "bogus"}, 422, "sortable columns are"),
        ("/api/pool", {"limit": "x"}, 422, "limit='x' is not an integer"),
        ("/api/pool", {"limit": 100000}, 422, "outside 1..500"),
        ("/api/trajectories", {}, 422, "'step' is required"),
        ("/api/trajectory", {"step": 9, "index": 0}, 404, "no trajectories logged for step 9"),
        ("/api/trajectory", {"step": 1, "index": 999}, 404, "out of range"),
        ("/api/metrics", {"run": 7}, 422, "run=7 is outside 0..1"),
        ("/api/nothing", {}, 404, "no route GET /api/nothing"),
    ],
)
def test_bad_requests_get_json_errors_naming_the_problem(url: str, path: str, params: dict, status: int, words: str) -> None:
    r = httpx.get(url + path, params=params)
    assert r.status_code == status and words in r.json()["error"], r.text


def test_damaged_and_unfinished_run_files(tmp_path: Path, runs: dict[str, Path]) -> None:
    run = tmp_path / "copy"
    shutil.copytree(runs["plain"], run, ignore=shutil.ignore_patterns("checkpoints"))
    step1 = run / "trajectories" / "step-000001.jsonl"
    lines = step1.read_text().splitlines()
    step1.write_text("\n".join(lines) + '\n{"meta": {"id": "torn')  # a write in progress: skipped
    step2 = run / "trajectories" / "step-000002.jsonl"
    step2.write_text(lines[0] + "\nnot json\n" + lines[1] + "\n")  # damage in the middle: an error naming the line
    empty = tmp_path / "starting"
    empty.mkdir()
    with running_server(create_app([run, empty])) as base:
        assert httpx.get(f"{base}/api/trajectories", params={"step": 1}).json()["total"] == len(lines)
        r = httpx.get(f"{base}/api/trajectories", params={"step": 2})
        assert r.status_code == 500 and f"{step2}, line 2: not a JSON record" in r.json()["error"]
        summary = httpx.get(f"{base}/api/runs").json()
        assert "error" not in summary[0] and "is not a searchplay run directory" in summary[1]["error"]


def test_read_only_pool_leaves_a_torn_file_alone_and_refuses_writes(tmp_path: Path, runs: dict[str, Path]) -> None:
    path = tmp_path / "pool.jsonl"
    data = (runs["plain"] / "pool.jsonl").read_bytes() + b'{"type": "quest'
    path.write_bytes(data)
    pool = QuestionPool(path, read_only=True)
    assert path.read_bytes() == data and pool.torn_lines == 1 and pool.cleared
    with pytest.raises(PoolError, match="read-only"):
        pool.clear(0.5, 9)


def test_report_embeds_the_data_and_loads_nothing_from_the_network(tmp_path: Path, runs: dict[str, Path]) -> None:
    out = tmp_path / "report.html"
    size = write_report([runs["plain"]], [ROOT / "docs/baselines/bm25"], out, last_steps=2)
    html = out.read_text()
    assert size == len(html.encode()) and "<script src" not in html and 'href="static' not in html
    payload = html.split("window.SEARCHPLAY_REPORT = ", 1)[1].split(";</script>", 1)[0]
    data = json.loads(payload.replace("<\\/", "</"))
    assert [s["step"] for s in data["steps"][0]] == [2, 3] and set(data["trajectories"][0]) == {"2", "3"}
    assert data["trajectories"][0]["3"]["details"][0]["segments"] and data["evals"][0]["name"] == "bm25"


def test_cli_refuses_paths_that_are_not_runs_or_evaluations(tmp_path: Path, runs: dict[str, Path]) -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "searchplay", *args], capture_output=True, text=True, cwd=ROOT, timeout=120)

    missing = cli("view", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "is not a directory" in missing.stderr
    not_eval = cli("report", str(runs["plain"]), "--eval", str(tmp_path), "--out", str(tmp_path / "r.html"))
    assert not_eval.returncode == 2 and "is not an evaluation directory" in not_eval.stderr
    ok = cli("report", str(runs["plain"]), "--out", str(tmp_path / "r.html"))
    assert ok.returncode == 0 and (tmp_path / "r.html").stat().st_size > 4_000_000  # plotly.js is inside


# ---- in a real browser -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        message = f"browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium); .ci/run installs it"
        if os.environ.get("SEARCHPLAY_REQUIRE_BROWSER"):  # set by .ci/run: in CI they must run, not skip
            pytest.fail(message)
        pytest.skip(message)
    from playwright import sync_api as playwright  # the dev extra

    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=BROWSER_ARGS)
        yield b
        b.close()


def _open(browser: Any, url: str) -> Any:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    page.js_errors = errors
    return page


@pytest.mark.browser
def test_curves_render_every_group_with_its_series(browser: Any, url: str) -> None:
    page = _open(browser, url)
    for group in ("solver", "proposer", "timing"):
        assert page.locator(f".chart[data-group='{group}'] svg.main-svg").count() >= 1
    legend = page.locator(".chart[data-group='solver'] .legendtext").all_text_contents()
    assert "plain: solver/acc" in legend and "verified: solver/acc" in legend  # two runs overlaid
    assert page.locator(".chart[data-group='solver'] .scatterlayer .trace").count() >= 2
    assert page.js_errors == []


@pytest.mark.browser
def test_a_trajectory_shows_masked_tokens_differently(browser: Any, url: str) -> None:
    page = _open(browser, url)
    page.click("#tabs button[data-tab=trajectories]")
    page.click("#trajectories-table tbody tr >> nth=0")
    page.wait_for_selector("pre.response span.seg-masked")
    trained, masked = (
        page.eval_on_selector(
            f"pre.response span.{c}", "e => getComputedStyle(e).backgroundColor + getComputedStyle(e).fontStyle"
        )
        for c in ("seg-trained", "seg-masked")
    )
    assert trained != masked
    masked_text = " ".join(page.locator("pre.response span.seg-masked").all_inner_texts())
    assert "<information>" in masked_text  # retrieved documents are masked


@pytest.mark.browser
def test_a_rejected_proposal_shows_its_reason_and_verification_input(browser: Any, url: str) -> None:
    page = _open(browser, url)
    page.click("#tabs button[data-tab=proposals]")
    page.select_option(".run-select[data-table=proposals]", "1")
    row = page.locator("#proposals-table tbody tr", has_text="verification_failed").first
    row.wait_for()
    assert row.locator(".reason").first.inner_text() == "verification_failed"
    row.click()
    card = page.locator("#proposals-detail .verification")
    card.wait_for()
    assert "mismatch" in card.inner_text() and card.locator("details.doc.noisy").count() >= 1


@pytest.mark.browser
def test_a_bad_run_directory_is_a_clear_page_error(browser: Any, tmp_path: Path) -> None:
    (tmp_path / "notes").mkdir()
    with running_server(create_app([tmp_path / "notes"])) as base:
        page = _open(browser, base)
        error = page.locator("#error")
        assert error.is_visible() and "is not a searchplay run directory" in error.inner_text()
        assert "Traceback" not in page.content()


@pytest.mark.browser
def test_the_report_works_from_the_file_alone(browser: Any, tmp_path: Path, runs: dict[str, Path]) -> None:
    out = tmp_path / "report.html"
    write_report([runs["plain"], runs["verified"]], [], out)
    page = browser.new_page()
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(out.as_uri())
    page.wait_for_selector("body[data-ready='1']", timeout=30_000)
    assert page.locator(".chart[data-group='solver'] svg.main-svg").count() >= 1
    page.click("#tabs button[data-tab=trajectories]")
    page.click("#trajectories-table tbody tr >> nth=0")
    page.wait_for_selector("pre.response span.seg-trained")
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []


@pytest.mark.browser
def test_the_page_follows_a_run_that_is_training(browser: Any, tmp_path: Path, runs: dict[str, Path]) -> None:
    run = tmp_path / "live"
    shutil.copytree(runs["plain"], run, ignore=shutil.ignore_patterns("checkpoints"))
    with running_server(create_app([run])) as base:
        page = _open(browser, base)
        assert "step 3 / 3" in page.inner_text("#runs")
        last = _lines(run / "metrics.jsonl")[-1]
        with open(run / "metrics.jsonl", "a") as f:  # the trainer logs step 4
            f.write(json.dumps({**last, "step": 4, "solver/acc": 0.75}) + "\n")
        page.wait_for_function("document.querySelector('#runs').innerText.includes('step 4')", timeout=15_000)
        solver = "document.querySelector(\".chart[data-group='solver']\")"
        page.wait_for_function(f"{solver}.data[0].x.at(-1) === 4", timeout=5_000)  # the curves were redrawn


@pytest.mark.browser
def test_a_collapse_of_search_queries_is_a_warning_on_the_page(browser: Any, tmp_path: Path, runs: dict[str, Path]) -> None:
    run = tmp_path / "collapsed"
    shutil.copytree(runs["plain"], run)
    rows = _lines(run / "metrics.jsonl")
    rows[-1]["proposer/query_diversity"] = 0.1  # 590 of 600 queries beginning "is a ..." looks like this
    rows[-1]["proposer/queries"] = 20.0
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with running_server(create_app([run, runs["verified"]])) as base:
        page = _open(browser, base)
        warning = page.locator("#warnings")
        text = warning.inner_text()
        assert warning.is_visible() and "collapsed: proposer search queries collapsed" in text, text
        assert "verified:" not in text, text  # the other run's queries are fine
