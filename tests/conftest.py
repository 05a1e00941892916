"""Shared fixtures. Tests use the real embedded assets that `make setup` builds."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402

from searchplay.assets import ASSETS, read_manifest  # noqa: E402
from searchplay.config import Config  # noqa: E402


@pytest.fixture(scope="session")
def cfg() -> Config:
    missing = [n for n in ASSETS if read_manifest(n) is None]
    if missing:
        pytest.fail(f"embedded assets not built: {missing}; run `make setup` (or `searchplay assets build`) first")
    return Config()
