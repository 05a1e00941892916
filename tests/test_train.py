"""`searchplay train` end to end on the tiny model: metrics, checkpoints, resume, SIGKILL."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def train_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "searchplay", "train", *args]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(train_cmd(*args), capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return out


def run_tiny(run_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`searchplay train` with the tiny test config into `run_dir`."""
    return run("--config", "configs/tiny-test.toml", "--run-dir", str(run_dir), *args)


def steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_train_two_steps_then_resume_with_the_same_pool(tmp_path: Path) -> None:
    rd = tmp_path / "run"
    run("--config", "configs/tiny-test.toml", "--run-dir", str(rd))
    assert steps(rd) == [1, 2]
    metrics = [json.loads(line) for line in (rd / "metrics.jsonl").read_text().splitlines()]
    for key in (
        "solver_update/loss",
        "proposer_update/grad_norm",
        "solver/acc",
        "proposer/valid_rate",
        "timing/step_s",
        "eval/em",
        "eval/f1",
        "search/cache_hits",
        "pool/size",
    ):
        assert key in metrics[1], key
    assert all(100 < m["memory/rss_mib"] < 20_000 for m in metrics)  # a real process's resident memory, in MiB
    ckpt = rd / "checkpoints" / "step-2"
    assert (ckpt / "model" / "model.safetensors").is_file() and (ckpt / "trainer.pt").is_file()
    state = json.loads((ckpt / "state.json").read_text())
    pool_before = (rd / "pool.jsonl").read_bytes()
    assert state["step"] == 2 and state["pool_events"] == len(pool_before.splitlines())
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(ckpt / "model")  # a plain HF directory
    run("--resume", str(rd), "--steps", "3")
    assert steps(rd) == [1, 2, 3]
    assert (rd / "pool.jsonl").read_bytes().startswith(pool_before)  # step 3 started from the same pool
    assert (rd / "checkpoints" / "step-3").is_dir() and (rd / "trajectories" / "step-000003.jsonl").is_file()


def test_runs_that_cannot_start_leave_nothing_and_runs_without_checkpoint_restart_when_told(tmp_path: Path) -> None:
    out = subprocess.run(train_cmd("--resume", str(tmp_path)), capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode == 2 and "not a run directory" in out.stderr
    bad = tmp_path / "bad"
    out = subprocess.run(
        train_cmd("--config", "configs/tiny-test.toml", "--run-dir", str(bad), "--set", "game.seeds=nowhere.jsonl"),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 2 and "nowhere.jsonl" in out.stderr and not bad.exists()  # no half-made run folder
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    out = subprocess.run(
        train_cmd("--config", "configs/tiny-test.toml", "--run-dir", str(mine)),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 2 and "holds no run written by searchplay" in out.stderr
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    # a run killed before its first checkpoint: metrics of step 1 but nothing to load
    rd = tmp_path / "r"
    run("--config", "configs/tiny-test.toml", "--run-dir", str(rd), "--steps", "1", "--set", "trainer.eval_every=0")
    for ckpt in (rd / "checkpoints").iterdir():
        shutil.rmtree(ckpt)
    refused = subprocess.run(
        train_cmd("--resume", str(rd), "--steps", "2"), capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert refused.returncode == 2 and "--restart" in refused.stderr and steps(rd) == [1]  # nothing replaced unasked
    run("--resume", str(rd), "--restart", "--steps", "2")
    assert steps(rd) == [1, 2]  # started again from step 1, each step logged once
    other = subprocess.run(
        train_cmd("--resume", str(rd), "--config", "configs/cpu-smollm2.toml"),
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert other.returncode == 2 and "differs from the run's own config" in other.stderr and "model.path" in other.stderr


def test_sigkill_mid_step_then_resume_loses_nothing_before_the_checkpoint(tmp_path: Path) -> None:
    rd = tmp_path / "run"
    args = ["--config", "configs/tiny-test.toml", "--run-dir", str(rd), "--steps", "4", "--set", "trainer.save_every=2"]
    proc = subprocess.Popen(
        train_cmd(*args), cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    deadline = time.time() + 300
    while time.time() < deadline:
        if (rd / "metrics.jsonl").exists() and 3 in steps(rd):
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("training did not reach step 3")
    time.sleep(0.5)  # inside step 4 now
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert steps(rd)[:3] == [1, 2, 3] and 4 not in steps(rd)
    before = (rd / "metrics.jsonl").read_text().splitlines()[:2]
    state = json.loads((rd / "checkpoints" / "step-2" / "state.json").read_text())
    pool_at_ckpt = b"".join((rd / "pool.jsonl").read_bytes().splitlines(keepends=True)[: state["pool_events"]])
    run("--resume", str(rd))
    assert steps(rd) == [1, 2, 3, 4]  # step 3 replayed from the checkpoint, logged once
    assert (rd / "metrics.jsonl").read_text().splitlines()[:2] == before
    assert (rd / "pool.jsonl").read_bytes().startswith(pool_at_ckpt)


def test_supervised_control_and_the_training_time_budget(tmp_path: Path) -> None:
    rd = tmp_path / "sup"
    run_tiny(rd, "--steps", "5", "--set", "game.mode=supervised", "--set", "game.train_data=nq-dev-answerable",
             "--set", "trainer.max_minutes=0.0001", "--set", "trainer.eval_every=0")  # fmt: skip
    metrics = [json.loads(line) for line in (rd / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1]  # the budget ran out during step 1: stop, checkpoint, no step 2
    assert (rd / "checkpoints" / "step-1").is_dir()
    m = metrics[0]
    assert m["solver/questions"] == 3 and "solver_update/loss" in m and not any(k.startswith("proposer") for k in m)
    trajs = [json.loads(line) for line in (rd / "trajectories" / "step-000001.jsonl").read_text().splitlines()]
    assert {t["meta"]["source"] for t in trajs} == {"labelled"} and all(t["meta"]["pool_id"].startswith("nq-dev-") for t in trajs)
    state = json.loads((rd / "checkpoints" / "step-1" / "state.json").read_text())
    assert state["train_seconds"] == pytest.approx(m["timing/train_s"])


def test_evaluation_before_training_on_several_sets(tmp_path: Path) -> None:
    rd = tmp_path / "ev"
    run_tiny(rd, "--steps", "1", "--set", "trainer.eval_before_training=true", "--set", "trainer.eval_every=1",
             "--set", "trainer.eval_limit=2", "--set", "trainer.eval_data=nq-dev-answerable,triviaqa-dev-answerable",
             "--set", "trainer.eval_reading=true")  # fmt: skip
    metrics = [json.loads(line) for line in (rd / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [0, 1]
    for m in metrics:
        for name in ("nq-dev-answerable", "triviaqa-dev-answerable"):
            assert m[f"eval/{name}/n"] == 2
            assert 0 <= m[f"eval/{name}/reading_em"] <= m[f"eval/{name}/reading_accuracy"] <= 1  # the chain's links
            assert 0 <= m[f"eval/{name}/search_recall"] <= 1 and 0 <= m[f"eval/{name}/question_recall"] <= 1
        assert m["eval/f1"] == pytest.approx((m["eval/nq-dev-answerable/f1"] + m["eval/triviaqa-dev-answerable/f1"]) / 2)
        assert "eval/reading_accuracy" in m and "eval/question_recall" in m
    assert "solver/acc" not in metrics[0] and "solver/acc" in metrics[1]
