"""Evaluation: loaders, bootstrap statistics, and `searchplay eval` / `compare` end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from searchplay.eval.data import DatasetError, load_dataset
from searchplay.eval.evaluate import score
from searchplay.eval.stats import bootstrap_ci, paired_bootstrap
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[1]


def test_score_squad_edge_cases() -> None:
    assert score("The Beatles!", ["the beatles"]) == (1.0, 1.0, 1.0)
    assert score("  an Apple  ", ["apple"])[0] == 1.0
    em, cover, f = score("John Lennon of the Beatles", ["John Lennon"])
    assert (em, cover) == (0.0, 1.0) and f == pytest.approx(2 * 0.5 * 1 / 1.5)
    assert score(None, ["x"]) == (0.0, 0.0, 0.0)
    assert score("1,000", ["1000"])[0] == 1.0  # punctuation removed inside numbers too


def test_bootstrap_interval_covers_the_true_mean_at_about_the_nominal_rate() -> None:
    rng = np.random.default_rng(123)
    p, covered, draws = 0.3, 0, 300
    for i in range(draws):
        sample = (rng.random(200) < p).astype(float).tolist()
        lo, hi = bootstrap_ci(sample, n_boot=400, seed=i)
        covered += lo <= p <= hi
    assert 0.90 <= covered / draws <= 0.99


def test_paired_bootstrap_identical_and_shifted() -> None:
    a = [1.0, 0.0, 1.0, 1.0, 0.0] * 20
    same = paired_bootstrap(a, list(a))
    assert same["diff"] == 0.0 and same["lo"] <= 0.0 <= same["hi"] and same["won"] == same["lost"] == 0
    better = paired_bootstrap([0.0] * 100, [1.0] * 30 + [0.0] * 70)
    assert better["diff"] == pytest.approx(0.3) and better["lo"] > 0 and better["won"] == 30
    with pytest.raises(ValueError, match="equal lengths"):
        paired_bootstrap([1.0], [1.0, 0.0])


def test_loaders_on_each_format(tmp_path: Path) -> None:
    rows = [
        {"id": "a", "question": "Q1?", "golden_answers": ["x", "y"]},
        {"question": "Q2?", "answers": "z"},
        {"question": "Q3?", "answer": ["w"]},
        {"question": "Q4?", "reward_model": {"ground_truth": {"target": ["v"]}}},
    ]
    f = tmp_path / "d.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    recs = load_dataset(str(f))
    assert [r["golden_answers"] for r in recs] == [["x", "y"], ["z"], ["w"], ["v"]]
    assert recs[0]["id"] == "a" and recs[1]["id"] == "1"
    table = tmp_path / "d.parquet"
    pq.write_table(pa.table({"question": ["Q?"], "golden_answers": [["p", "q"]]}), table)
    assert load_dataset(str(table))[0]["golden_answers"] == ["p", "q"]
    other = tmp_path / "o.jsonl"
    other.write_text(json.dumps({"query": "Q?", "labels": ["k"]}) + "\n")
    assert load_dataset(str(other), {"question": "query", "golden_answers": "labels"})[0]["golden_answers"] == ["k"]
    assert len(load_dataset("nq-test")) == 3610


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"question": "Q?"}\n', r"bad\.jsonl:1: no answers"),
        (
            '{"question": "Q?", "golden_answers": ["a"]}\n{"golden_answers": ["a"]}\n',
            r"bad\.jsonl:2: missing or empty field 'question'",
        ),
        ('{"question": "Q?", "golden_answers": []}\n', r"bad\.jsonl:1: answers must be"),
        ("{oops\n", r"bad\.jsonl:1: "),
    ],
)
def test_malformed_files_name_file_line_and_problem(tmp_path: Path, content: str, message: str) -> None:
    f = tmp_path / "bad.jsonl"
    f.write_text(content)
    with pytest.raises(DatasetError, match=message):
        load_dataset(str(f))
    with pytest.raises(DatasetError, match="neither a bundled set"):
        load_dataset("no-such-set")


# `searchplay eval` of the tiny model on answerable NQ questions, in a subprocess.
EVAL_TINY = [sys.executable, "-m", "searchplay", "eval", "--model", "tiny-random", "--data", "nq-answerable",
             "--set", "model.dtype=float32"]  # fmt: skip


def compare_cli(a: Path, b: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "searchplay", "compare", str(a), str(b)]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)


def run_eval(out: Path, *extra: str) -> None:
    cmd = [*EVAL_TINY, "--limit", "10", "--out", str(out), "--set", "rollout.max_new_tokens=6", *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def test_eval_end_to_end_and_compare(tmp_path: Path) -> None:
    run_eval(tmp_path / "a")
    run_eval(tmp_path / "b", "--retriever", "none")
    summary = json.loads((tmp_path / "a" / "summary.json").read_text())
    report = summary["datasets"]["nq-answerable"]
    for key in ("em", "cover_em", "f1", "em_ci", "f1_ci", "answer_rate", "turns_mean", "searches_mean", "questions_per_minute"):
        assert key in report
    assert report["n"] == 10 and report["searches_mean"] > 0
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["datasets"]["nq-answerable"]["searches_mean"] == 0
    preds = (tmp_path / "a" / "predictions-nq-answerable.jsonl").read_text().splitlines()
    assert len(preds) == 10 and "trajectory" in json.loads(preds[0])
    assert "| nq-answerable | 10 |" in (tmp_path / "a" / "summary.md").read_text()
    out = compare_cli(tmp_path / "a", tmp_path / "b")
    assert out.returncode == 0, out.stderr
    assert "| nq-answerable | em |" in out.stdout and "| nq-answerable | f1 |" in out.stdout
    same = compare_cli(tmp_path / "a", tmp_path / "a")
    assert "+0.0 [+0.0, +0.0] | 0 | 0 | 10 |" in same.stdout


def test_eval_outputs_are_checked_before_any_work_and_named_by_dataset_stem(tmp_path: Path) -> None:
    data = tmp_path / "sets" / "my set.jsonl"
    data.parent.mkdir()
    data.write_text(
        "".join(
            json.dumps({"id": str(i), "question": f"Who wrote Hamlet {i}?", "answers": ["Shakespeare"]}) + "\n" for i in range(2)
        )
    )
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "mine.txt").write_text("keep")
    base = [sys.executable, "-m", "searchplay", "eval", "--config", "configs/tiny-test.toml", "--model", "tiny-random",
            "--data", str(data)]  # fmt: skip
    refused = subprocess.run([*base, "--out", str(notes)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert refused.returncode == 2 and "holds no evaluation written by searchplay" in refused.stderr
    assert sorted(p.name for p in notes.iterdir()) == ["mine.txt"]
    out = tmp_path / "ev"
    done = subprocess.run([*base, "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]  # an absolute path: predictions named by the file's stem
    assert (out / "predictions-my set.jsonl").is_file() and "my set" in json.loads((out / "summary.json").read_text())["datasets"]
    again = subprocess.run([*base, "--out", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert again.returncode == 2 and "--overwrite" in again.stderr
    twins = subprocess.run(
        [*base[:-1], f"{data},{tmp_path / 'my set.jsonl'}", "--out", str(tmp_path / "x")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert twins.returncode == 2 and "share a report name" in twins.stderr and not (tmp_path / "x").exists()


def test_an_interrupted_evaluation_resumes_and_a_dead_retriever_stops_it(tmp_path: Path) -> None:
    out = tmp_path / "ev"
    base = [*EVAL_TINY, "--limit", "6", "--batch-size", "2", "--set", "rollout.max_new_tokens=4", "--out", str(out)]
    full = subprocess.run(base, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert full.returncode == 0, full.stderr[-2000:]
    reference = (out / "predictions-nq-answerable.jsonl").read_text().splitlines()
    # as if killed after two batches, in the middle of writing the third line
    (out / "summary.json").unlink()
    (out / "predictions-nq-answerable.jsonl").write_text("\n".join(reference[:4]) + "\n" + reference[4][:30])
    resumed = subprocess.run([*base, "--resume"], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    again = (out / "predictions-nq-answerable.jsonl").read_text().splitlines()
    assert [json.loads(x)["id"] for x in again] == [json.loads(x)["id"] for x in reference]
    assert again[:4] == reference[:4] and json.loads((out / "summary.json").read_text())["datasets"]["nq-answerable"]["n"] == 6
    done_twice = subprocess.run([*base, "--resume"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done_twice.returncode == 2 and "already holds an evaluation" in done_twice.stderr  # finished: nothing to resume
    (out / "summary.json").unlink()
    other = subprocess.run(
        [*base[:-2], "--out", str(out), "--resume", "--limit", "7"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert other.returncode == 2 and "other settings" in other.stderr
    dead = subprocess.run(
        [
            *base[:-2],
            "--out",
            str(tmp_path / "dead"),
            "--retriever",
            f"http://127.0.0.1:{free_port()}",
            "--set",
            "search.retries=0",
            "--set",
            "search.timeout_s=1",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert dead.returncode == 1 and "retriever error" in dead.stderr and "--resume" in dead.stderr
    assert not (tmp_path / "dead" / "summary.json").exists()


def test_compare_warns_on_few_shared_questions_and_refuses_none(tmp_path: Path) -> None:
    from searchplay.eval.report import CompareError, compare

    def fake_eval(d: Path, ids: list[str], name: str = "set") -> None:  # evaluation folders as `eval` writes them
        d.mkdir()
        (d / "summary.json").write_text(json.dumps({"datasets": {name: {}}}))
        (d / f"predictions-{name}.jsonl").write_text(
            "".join(json.dumps({"id": i, "em": 1.0, "cover_em": 1.0, "f1": 1.0}) + "\n" for i in ids)
        )

    fake_eval(tmp_path / "a", [str(i) for i in range(10)])
    fake_eval(tmp_path / "b", ["1", "2", "3"])
    fake_eval(tmp_path / "c", ["x", "y"])
    fake_eval(tmp_path / "d", ["1"], name="other")
    assert "only 3 shared questions (10 in A, 3 in B)" in compare(tmp_path / "a", tmp_path / "b")
    assert "warning" not in compare(tmp_path / "a", tmp_path / "a")
    with pytest.raises(CompareError, match="share no question ids"):
        compare(tmp_path / "a", tmp_path / "c")
    with pytest.raises(CompareError, match="no dataset in both"):
        compare(tmp_path / "a", tmp_path / "d")
