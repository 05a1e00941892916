"""Shared fixtures. Tests use the real embedded assets that `make setup` builds."""

from __future__ import annotations

import os

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
