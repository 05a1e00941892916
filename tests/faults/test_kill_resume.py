"""SIGKILL a training run at seeded random moments, resume each time: nothing logged before a
checkpoint changes, every step is logged once, and the final weights equal an uninterrupted run's."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[2]
ARGS = ["--config", "configs/tiny-test.toml", "--steps", "4", "--set", "trainer.save_every=1", "--set", "trainer.eval_every=0",
        "--set", "trainer.keep_checkpoints=1"]


def train(*args: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "searchplay", "train", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "checkpoints" / "step-4" / "model" / "model.safetensors"))


def test_killed_at_random_points_and_resumed_gives_the_uninterrupted_result(tmp_path: Path) -> None:
    reference = tmp_path / "reference"
    proc = train(*ARGS, "--run-dir", str(reference))
    assert proc.wait(timeout=600) == 0, proc.stderr.read().decode()[-2000:]
    run = tmp_path / "killed"
    rng = random.Random(11)
    kills, started, after_checkpoint = 0, False, 0
    while True:
        args = ["--resume", str(run), "--steps", "4"] if started else [*ARGS, "--run-dir", str(run)]
        proc = train(*args)
        try:
            proc.wait(timeout=rng.uniform(2.0, 6.0) if kills < 5 else 600)
        except subprocess.TimeoutExpired:
            before = (run / "metrics.jsonl").read_bytes() if (run / "metrics.jsonl").exists() else b""
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
            started = started or (run / "config.toml").exists()
            state = sorted((run / "checkpoints").glob("step-*/state.json")) if (run / "checkpoints").exists() else []
            if state:  # what was logged up to the checkpoint stays byte for byte after the next resume cuts back
                after_checkpoint += 1
                step = json.loads(state[-1].read_text())["step"]
                kept = b"".join(line for line in before.splitlines(keepends=True) if json.loads(line)["step"] <= step)
                marker = (step, kept)
            else:
                marker = None
            continue
        assert proc.returncode == 0, proc.stderr.read().decode()[-2000:]
        break
    assert kills >= 5 and after_checkpoint >= 2, f"{kills} kills, {after_checkpoint} after a checkpoint: too early to test much"
    lines = (run / "metrics.jsonl").read_bytes()
    assert [json.loads(line)["step"] for line in lines.splitlines()] == [1, 2, 3, 4]
    if marker is not None:
        assert lines.startswith(marker[1])
    ours, theirs = weights(run), weights(reference)
    assert ours.keys() == theirs.keys()
    different = [k for k in ours if not torch.equal(ours[k], theirs[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
