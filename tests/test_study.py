"""`searchplay plot` and the study script (`make study`) end to end on the tiny model."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def searchplay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "searchplay", *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_plot_draws_the_panels_present_and_refuses_a_non_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    rows = [
        {
            "step": s,
            "solver/acc": s / 10,
            "proposer/valid_rate": 0.1 * s,
            "verify/pass_rate": 0.5,
            "solver_update/kl": 0.001 * s,
            "solver_update/logprob_gap_mean": 0.02,
        }
        for s in range(1, 8)
    ]
    rows[-1].update({"eval/em": 0.1, "eval/cover_em": 0.2, "eval/f1": 0.15, "eval/reading_accuracy": 0.3})
    rows[-2]["eval/question_recall"] = "nan"  # a non-finite value as the trainer writes it: a gap, not an error
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = searchplay("plot", str(run), str(run), "--smooth", "3", "--label", "a", "--label", "b")
    assert out.returncode == 0, out.stderr
    png = (run / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    said = " ".join(out.stdout.split())  # the console wraps long lines
    for panel in ("solver", "questions", "KL to reference", "log-prob gap", "periodic evaluation", "links of the chain"):
        assert panel in said
    assert "rewards" not in said  # no reward series in these metrics: no empty panel
    bad = searchplay("plot", str(tmp_path))
    assert bad.returncode == 2 and "no metrics.jsonl" in bad.stderr
    mismatch = searchplay("plot", str(run), "--label", "a", "--label", "b")
    assert mismatch.returncode == 2 and "--label" in mismatch.stderr
    other = searchplay("plot", str(run), "--out", str(tmp_path / "x.jinja"))  # was a matplotlib traceback
    assert other.returncode == 2 and "ending in .png" in other.stderr and not (tmp_path / "x.jinja").exists()


@pytest.mark.heavy
def test_study_runs_every_phase_and_resumes_without_redoing_any(tmp_path: Path) -> None:
    out, work, probes = tmp_path / "study", tmp_path / "work", tmp_path / "probes.jsonl"
    probes.write_text("".join(json.dumps({"id": f"p{i}", "question": f"Who is {i}?", "golden_answers": [str(i)]}) + "\n"
                              for i in range(3)))  # fmt: skip
    common = ["--config", "configs/tiny-test.toml", "--steps", "1", "--limit", "3", "--out", str(out),
              "--work", str(work), "--probes", str(probes)]  # fmt: skip
    sweep = [sys.executable, "benchmarks/study.py", "sweep", "--only", "retrievable", *common]
    arms = [sys.executable, "benchmarks/study.py", "arms", "--setting", "retrievable", *common]
    earlier = subprocess.run([*sweep[:4], "v2", *common], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert earlier.returncode != 0 and "ran under the solver prompt before" in earlier.stderr  # not rerun under today's
    for cmd in (sweep, arms):
        done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
        assert done.returncode == 0, done.stderr[-3000:]
    for name, datasets in (("retrievable", ("nq-dev-answerable", "probes")), ("supervised-then-selfplay", ("nq-answerable",))):
        for dataset in datasets:
            summary = json.loads((out / "evals" / f"{name}-{dataset}" / "summary.json").read_text())
            assert summary["datasets"][dataset]["n"] == 3
    assert "| retrievable | 1 |" in (out / "sweep-table.md").read_text()
    trained = (out / "runs" / "retrievable" / "config.toml").read_text()
    assert 'verifier = "retrievable"' in trained and 'proposer_reward = "frontier"' in trained
    continued = (out / "runs" / "supervised-then-selfplay" / "config.toml").read_text()
    assert "arm-supervised/checkpoints/step-1/model" in continued  # starts from the supervised weights
    assert "max_minutes = 0.0" in continued  # arms are matched on steps, not on time
    table = (out / "table.md").read_text()
    # Table 1's layout: a row per model; against the base, then supervised-then-selfplay against supervised
    first, continual = [part for part in table.split("\n\n") if part.startswith("| model | nq-answerable em |")]
    assert [line.split(" | ")[0] for line in first.splitlines()[2:]] == [
        f"| {n}" for n in ("base", "selfplay", "frozen-proposer", "selfplay-seed1", "supervised", "supervised-then-selfplay")
    ]
    assert re.search(r"^\| selfplay-seed1 \| [\d.]+ \([+-][\d.]+ \[[+-][\d.]+, [+-][\d.]+\]\) \|", first, re.M)
    assert continual.splitlines()[2].startswith("| supervised | ")  # the continual row's target: against supervised
    assert continual.splitlines()[3].startswith("| supervised-then-selfplay | ") and "[" in continual
    assert "| selfplay | nq-answerable |" in table  # the form of the answers, per model and test set
    assert "| step | selfplay probe reward (exact of 3) |" in table and "same questions" in table  # the probe curve
    chain = re.findall(r"^\| (\S+) \| nq-answerable \| [\d.]+% \| [\d.]+% \| \d+ of \d+ \| \d+ of \d+ \|$", table, re.M)
    assert chain[0] == "base" and len(chain) == 6  # where the chain breaks: retrieval, reading, answer form
    assert "| supervised | 1 |" in table and "Not evaluated yet" not in table  # each arm's steps and minutes
    assert (out / "curves.png").is_file() and "B - A" in (out / "compare.md").read_text()
    for cmd in (sweep, arms):
        again = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
        assert again.returncode == 0 and "$ searchplay" not in again.stdout  # every phase was already done
    shutil.rmtree(work)  # a fresh machine: the committed results without the run folders
    fresh = subprocess.run(arms, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert fresh.returncode == 0 and "$ searchplay" not in fresh.stdout  # evaluated arms are not trained again
    # a fresh machine after a session that evaluated the supervised arm but not the one continuing from its weights
    shutil.rmtree(out / "evals" / "supervised-then-selfplay-nq-answerable")
    shutil.rmtree(work)
    paired = subprocess.run(arms, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert paired.returncode == 0, paired.stderr[-3000:]
    assert "arm supervised: evaluated, but supervised-then-selfplay starts from its weights" in paired.stdout
    assert (work / "arm-supervised" / "checkpoints").is_dir()  # trained again, here, before the arm that continues
    assert (out / "evals" / "supervised-then-selfplay-nq-answerable" / "summary.json").is_file()
