"""One writer per run or evaluation folder, and resume keeps good work (reliability v2, findings 2 and 7).

Real `searchplay train` / `eval` processes on the tiny test model: a second writer is refused with
the first one's pid while the first goes on undisturbed; a killed writer's lock is gone with it (the
OS releases fcntl locks). `train --resume` on a run that logged steps but saved no checkpoint refuses
unless told `--restart`, and a damaged metrics line stops it with file and line, changing nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from searchplay.outdir import WRITER_LOCK

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ["train", "-c", "configs/tiny-test.toml", "--set", "trainer.eval_every=0", "--set", "trainer.save_every=1"]
EVAL = ["eval", "--model", "tiny-random", "--data", "nq-answerable", "--batch-size", "2", "--set", "model.dtype=float32"]


def searchplay(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "searchplay", *args], cwd=ROOT, capture_output=True, text=True, timeout=600)


def start(*args: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "searchplay", *args]
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for(ready, proc: subprocess.Popen[str]) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + 300
    while not ready():
        assert proc.poll() is None, proc.stderr.read()[-2000:] if proc.stderr else ""
        assert time.time() < deadline
        time.sleep(0.1)


def test_a_second_trainer_on_the_same_run_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = start(*TRAIN, "--steps", "1000", "--run-dir", str(run))
    wait_for(lambda: (run / WRITER_LOCK).is_file() and (run / WRITER_LOCK).read_text().split()[:1] == [str(first.pid)], first)
    for args in ([*TRAIN, "--run-dir", str(run)], ["train", "--resume", str(run)]):
        if "--resume" in args:
            wait_for(lambda: (run / "config.toml").is_file(), first)
        second = searchplay(*args)
        assert second.returncode != 0
        said = " ".join(second.stderr.split())
        assert f"being written by another searchplay training run (pid {first.pid})" in said, said[-1000:]
    assert first.poll() is None  # undisturbed, still training
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=600) == 130
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, len(steps) + 1))  # one writer: every step once, in order


def test_a_killed_trainers_lock_goes_with_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = start(*TRAIN, "--steps", "1000", "--run-dir", str(run))
    wait_for(lambda: (run / "checkpoints" / "step-1").is_dir(), first)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    resumed = searchplay("train", "--resume", str(run), "--steps", "2")
    assert resumed.returncode == 0, resumed.stderr[-2000:]


def test_a_second_evaluation_into_the_same_folder_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "eval"
    first = start(*EVAL, "--limit", "400", "--out", str(out))
    wait_for(lambda: (out / "predictions-nq-answerable.jsonl").is_file(), first)
    second = searchplay(*EVAL, "--limit", "400", "--out", str(out), "--resume")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert second.returncode != 0
    assert f"being written by another searchplay evaluation (pid {first.pid})" in " ".join(second.stderr.split())


def test_a_second_index_build_into_the_same_output_is_refused(tmp_path: Path) -> None:
    """Reliability v3, finding 1: a second build used to remove the first's half-built index and start its own."""
    out = tmp_path / "index"
    first = start("index", "build", "--corpus", "bundled", "--kind", "dense", "--out", str(out))
    wait_for(lambda: (tmp_path / "index.building").is_dir(), first)
    second = searchplay("index", "build", "--corpus", "bundled", "--kind", "dense", "--out", str(out))  # it used to join in
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert second.returncode != 0
    assert f"being written by another searchplay index build (pid {first.pid})" in " ".join(second.stderr.split())
    assert not out.exists()  # the first build's half index was left alone, and the second built nothing


def test_a_folder_that_could_not_start_a_run_is_not_left_behind(tmp_path: Path) -> None:
    run = tmp_path / "run"
    out = searchplay(*TRAIN, "--run-dir", str(run), "--set", "game.seeds=/nonexistent/seeds.jsonl")
    assert out.returncode != 0
    assert not run.exists()


def _run_without_checkpoint(tmp_path: Path) -> Path:
    """A finished 2-step run whose checkpoints are gone: as if killed after logging, before saving."""
    run = tmp_path / "run"
    done = searchplay(*TRAIN, "--steps", "2", "--run-dir", str(run), "--set", "trainer.save_every=10")
    assert done.returncode == 0, done.stderr[-2000:]
    shutil.rmtree(run / "checkpoints")
    return run


def test_resume_without_a_checkpoint_refuses_unless_told_to_restart(tmp_path: Path) -> None:
    run = _run_without_checkpoint(tmp_path)
    metrics = (run / "metrics.jsonl").read_bytes()
    refused = searchplay("train", "--resume", str(run), "--steps", "2")
    assert refused.returncode != 0
    said = " ".join(refused.stderr.split())
    assert "logged steps 1-2 but saved no checkpoint" in said and "--restart" in said, said[-1000:]
    assert (run / "metrics.jsonl").read_bytes() == metrics  # nothing deleted
    restarted = searchplay("train", "--resume", str(run), "--restart", "--steps", "2")
    assert restarted.returncode == 0, restarted.stderr[-2000:]
    assert [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2]


def test_a_damaged_metrics_line_stops_resume_with_file_and_line(tmp_path: Path) -> None:
    run = _run_without_checkpoint(tmp_path)
    lines = (run / "metrics.jsonl").read_bytes().splitlines(keepends=True)
    damaged = lines[0][:-20] + b"\n" + lines[1]
    (run / "metrics.jsonl").write_bytes(damaged)
    refused = searchplay("train", "--resume", str(run), "--restart", "--steps", "2")
    assert refused.returncode != 0
    assert "metrics.jsonl, line 1: damaged" in " ".join(refused.stderr.split())
    assert (run / "metrics.jsonl").read_bytes() == damaged
