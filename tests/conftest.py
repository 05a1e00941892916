"""Shared fixtures. Tests use the real embedded assets that `make setup` builds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

from searchplay.assets import DEFAULT_ASSETS, read_manifest
from searchplay.assets.names import BUNDLED, TINY, index_path, model_path
from searchplay.config import Config
from searchplay.llm.transformers_engine import TransformersEngine
from searchplay.search.bm25 import Bm25Retriever


@pytest.fixture(scope="session")
def cfg() -> Config:
    missing = [n for n in DEFAULT_ASSETS if read_manifest(n) is None]
    if missing:
        pytest.fail(f"embedded assets not built: {missing}; run `make setup` (or `searchplay assets build`) first")
    return Config()


@pytest.fixture(scope="session")
def tiny_engine(cfg: Config):
    """The tiny random Llama (fp32, 1 thread) behind the real transformers engine."""
    return TransformersEngine.load(model_path(TINY), "float32", threads=1)


@pytest.fixture(scope="session")
def bundled_bm25(cfg: Config):
    return Bm25Retriever(index_path(BUNDLED, "bm25", cfg))


ROOT = Path(__file__).resolve().parents[1]


def _train(run_dir: Path, *overrides: str) -> Path:
    cmd = [sys.executable, "-m", "searchplay", "train", "-c", str(ROOT / "configs/tiny-test.toml"), "--run-dir", str(run_dir)]
    for o in ("trainer.steps=3", "trainer.save_every=100", "trainer.trajectories_per_step=0", *overrides):
        cmd += ["--set", o]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    return run_dir


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two 3-step runs of the tiny config, trained once per session: `plain` (verifier off, so the pool grows) and
    `verified` (the policy verifier with noisy documents and a word minimum: rejections by a rule and by verification)."""
    base = tmp_path_factory.mktemp("view-runs")
    return {
        "plain": _train(base / "plain", "game.pool_clear_interval=2", "game.keep_ratio=0.5"),
        "verified": _train(base / "verified", "game.verifier=policy", "game.noisy_docs=1", "game.min_question_words=6"),
    }
