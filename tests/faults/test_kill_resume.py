"""SIGKILL a training run at seeded random points, resume each time: every step is logged once, what
was logged up to a checkpoint never changes, and the final weights equal an uninterrupted run's.

Kill points are chosen by progress, not wall-clock time, so the test means the same on a slow or
busy machine: one kill while the run is still loading, then kills at a random delay after a
step's metrics line appears (inside the next step, or while its checkpoint is being written).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
STEPS = 6
ARGS = [
    "--config",
    "configs/tiny-test.toml",
    "--steps",
    str(STEPS),
    "--set",
    "trainer.save_every=1",
    "--set",
    "trainer.eval_every=0",
    "--set",
    "trainer.keep_checkpoints=1",
]


def train(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "searchplay", "train", *args],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


def logged_steps(run: Path) -> list[int]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line.endswith("}")]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / f"step-{STEPS}" / "model" / "model.safetensors"))


def kill(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.mark.heavy
def test_killed_at_random_points_and_resumed_gives_the_uninterrupted_result(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    proc = train(*ARGS, "--run-dir", str(reference))
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()[-2000:]
    run = tmp_path / "killed"
    rng = random.Random(11)
    proc = train(*ARGS, "--run-dir", str(run))
    time.sleep(rng.uniform(0.5, 2.0))  # first kill: still loading the model, before any step
    kill(proc)
    kills, after_checkpoint, frozen = 1, 0, b""
    while True:
        started = (run / "config.toml").exists()
        resume = ["--resume", str(run), "--restart", "--steps", str(STEPS)]  # --restart: killed before a checkpoint
        proc = train(*(resume if started else [*ARGS, "--run-dir", str(run)]))
        if kills >= 6:
            break
        target = max(logged_steps(run), default=0) + 1
        deadline = time.time() + 300
        while proc.poll() is None and max(logged_steps(run), default=0) < target:
            assert time.time() < deadline, "no progress"
            time.sleep(0.05)
        if proc.poll() is not None:
            break
        time.sleep(rng.uniform(0.0, 1.0))
        kill(proc)
        kills += 1
        states = sorted((run / "checkpoints").glob("step-*/state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
        if states:
            after_checkpoint += 1
            step = json.loads(states[-1].read_text())["step"]
            metrics = (run / "metrics.jsonl").read_bytes()
            frozen = b"".join(line for line in metrics.splitlines(keepends=True) if json.loads(line)["step"] <= step)
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()[-2000:]
    assert kills >= 5 and after_checkpoint >= 3, (kills, after_checkpoint)
    metrics = (run / "metrics.jsonl").read_bytes()
    assert [json.loads(line)["step"] for line in metrics.splitlines()] == list(range(1, STEPS + 1))  # each step once
    assert metrics.startswith(frozen)  # what was logged up to the last checkpoint before the last kill is unchanged
    ours, theirs = weights(run), weights(reference)
    assert ours.keys() == theirs.keys()
    different = [k for k in ours if not torch.equal(ours[k], theirs[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
