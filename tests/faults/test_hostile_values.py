"""Hostile and impossible config values are refused before any work (reliability v3, findings 4 and 8): NaN and
infinities passed every range check (`lo <= v <= hi` is False for NaN, so nothing was refused) and trained on a NaN
loss or failed with a traceback after loading; URLs that are not http(s) ran a whole training with every search
failing; token budgets with no room for a prompt trained every episode cut off; periodic evaluation without data
failed after loading."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from searchplay.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("learner.clip_high=nan", "learner.clip_high: value nan is not a finite number"),  # nan passes lo <= v <= hi
        ("learner.lr=nan", "learner.lr: value nan is not a finite number"),
        ("learner.kl_coef=inf", "learner.kl_coef: value inf is not a finite number"),
        ("trainer.max_minutes=-inf", "trainer.max_minutes: value -inf is not a finite number"),
        ("search.url=file:///etc/passwd", "search.url: value 'file:///etc/passwd' must start with http:// or https://"),
        ("search.url=http://[::1", "search.url: value 'http://[::1' is not a valid URL"),
        ("search.url=http://host:99999", "search.url: value 'http://host:99999' is not a valid URL"),
        ("judge.base_url=javascript:alert(1)", "judge.base_url: value 'javascript:alert(1)' must start with http://"),
        ("judge.base_url=http:///v1", "judge.base_url: value 'http:///v1' names no host"),
    ],
)
def test_non_finite_numbers_and_urls_that_are_not_http_are_refused(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(None, [override])


def test_settings_that_would_fail_only_after_loading_are_refused_at_once() -> None:
    """Reliability v3, finding 8: each of these trained (every episode stopped by length) or failed after loading."""
    with pytest.raises(ConfigError, match=r"rollout\.max_total_tokens = 1 leaves no room for a prompt"):
        load_config(None, ["rollout.max_total_tokens=1"])
    with pytest.raises(ConfigError, match=r"rollout\.max_total_tokens = 64 .* rollout\.max_new_tokens = 64"):
        load_config(None, ["rollout.max_total_tokens=64", "rollout.max_new_tokens=64"])
    with pytest.raises(ConfigError, match=r"trainer\.eval_every = 2 needs trainer\.eval_data"):
        load_config(None, ["trainer.eval_every=2", "trainer.eval_data= , "])
    assert load_config(None, ["trainer.eval_every=0", "trainer.eval_data="]).trainer.eval_data == ""


MISSPELT = [["trainer.eval_every=1", "trainer.eval_data=nq-dev,nope"], ["trainer.probe_every=1", "trainer.probe_data=no.jsonl"]]


@pytest.mark.parametrize("settings", MISSPELT)
def test_a_dataset_that_does_not_exist_stops_training_before_the_run_folder_is_made(tmp_path: Path, settings: list) -> None:
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "searchplay", "train", "-c", str(ROOT / "configs/tiny-test.toml"), "--run-dir", str(run)]
    for setting in settings:
        cmd += ["--set", setting]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr[-2000:]  # was a traceback after loading
    assert "is neither a bundled set" in out.stderr and not run.exists()
