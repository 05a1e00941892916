"""Label-free warm-up (expert iteration, `searchplay warmup`): only confirmed samples are trained on."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from pathlib import Path

from searchplay.agent.trajectory import Trajectory
from searchplay.train.update import confirmed, role_samples

ROOT = Path(__file__).resolve().parents[1]


def _traj(role: str, rejection: str | None = None) -> Trajectory:
    t = Trajectory([1, 2], meta={"role": role, "rejection": rejection})
    t.append([3, 4, 5], True)
    return t


def test_rft_trains_only_confirmed_samples_with_advantage_one() -> None:
    solver = [_traj("solver") for _ in range(5)]
    rewards = [1.0, 0.5, 0.0, 1.0, 1.0]
    excluded = [False, False, False, False, True]  # a failed search is never trained on, even when "right"
    kept = role_samples(solver, rewards, [0, 0, 1, 1, 1], excluded, "rft", True, True, 0)
    assert [s.advantage for s in kept] == [1.0, 1.0]
    assert [t.meta.get("advantage") for t in solver] == [1.0, None, None, 1.0, None]  # what the viewer shows
    proposer = [_traj("proposer"), _traj("proposer", "too_short"), _traj("proposer", "verification_failed")]
    kept = role_samples(proposer, [0.1, -0.5, -0.5], [0, 1, 2], [], "rft", True, False, 0, rft_min_reward=0.0)
    assert len(kept) == 1 and kept[0].advantage == 1.0  # the one question the filters and the verifier kept
    assert not confirmed(_traj("proposer", "too_short"), 1.0, 0.0) and confirmed(_traj("proposer"), 0.0, 0.0)
    assert not confirmed(_traj("solver"), 0.99, 1.0) and confirmed(_traj("solver"), 1.0, 1.0)


def test_warmup_command_trains_the_tiny_model_on_its_kept_questions(tmp_path: Path) -> None:
    run = tmp_path / "warmup"
    cmd = [sys.executable, "-m", "searchplay", "warmup", "-c", str(ROOT / "configs/tiny-test.toml"), "--run-dir", str(run)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    saved = tomllib.loads((run / "config.toml").read_text())
    assert saved["solver"]["adv_estimator"] == saved["proposer"]["adv_estimator"] == "rft"
    assert saved["learner"]["kl_coef"] == 0.0
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics if "step" in m][:2] == [1, 2]
    # verifier off: every proposal the rules keep is confirmed; the random solver never answers exactly
    for m in metrics:
        if "proposer/valid_rate" in m:
            assert m["proposer_update/samples"] == round(m["proposer/valid_rate"] * 6)  # 3 seeds x 2 rollouts
            assert m.get("solver_update/samples", 0.0) == 0.0
    assert (run / "checkpoints").is_dir()
