"""Damaged assets are detected (reliability v3, finding 5): `assets build` records the size and sha256 of every
file it builds; `search` (and every command that resolves a bundled asset) refuses an asset whose files no longer
match, naming the asset, the file and the command that rebuilds it; `assets build` rebuilds what is damaged
instead of calling it up to date. Real builds of the corpus and BM25 index into a temporary home, real
`searchplay` processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
QUERY = ["search", "--kind", "bm25", "-k", "1", "Eiffel Tower"]


def searchplay(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SEARCHPLAY_HOME": str(home)}
    command = [sys.executable, "-m", "searchplay", *args]
    return subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def said(out: subprocess.CompletedProcess[str]) -> str:
    return " ".join((out.stdout + out.stderr).replace("│", " ").split())


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    home = tmp_path_factory.mktemp("home")
    out = searchplay(home, "assets", "build", "wiki-bm25")
    assert out.returncode == 0, out.stderr[-2000:]
    return home


def test_an_index_zeroed_in_place_is_refused_then_rebuilt(home: Path) -> None:
    assert "Title: Eiffel Tower" in searchplay(home, *QUERY).stdout
    scores = home / "wiki-bm25" / "index" / "bm25s" / "data.csc.index.npy"
    np.save(scores, np.zeros_like(np.load(scores)))  # same size, every score 0: search used to return nothing, rc 0
    out = searchplay(home, *QUERY)
    text = said(out)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert "asset 'wiki-bm25' is damaged" in text and "data.csc.index.npy" in text and "searchplay assets build" in text
    built = searchplay(home, "assets", "build", "wiki-bm25")
    assert "wiki-bm25: index/bm25s/data.csc.index.npy is damaged" in said(built) and "1 built, 1 up to date" in said(built)
    assert "Title: Eiffel Tower" in searchplay(home, *QUERY).stdout


def test_a_truncated_file_is_named_with_its_sizes(home: Path) -> None:
    passages = home / "wiki-bm25" / "index" / "passages.jsonl"
    size = passages.stat().st_size
    passages.write_bytes(passages.read_bytes()[:100])  # used to be a raw orjson traceback
    text = said(searchplay(home, *QUERY))
    assert f"passages.jsonl: 100 bytes where {size} were written" in text, text
    assert "1 built" in said(searchplay(home, "assets", "build", "wiki-bm25"))


def test_an_asset_built_without_checksums_is_rebuilt_once(home: Path) -> None:
    manifest = home / "wiki" / "manifest.json"
    record = json.loads(manifest.read_text())
    del record["files"]  # as built by an older searchplay
    manifest.write_text(json.dumps(record))
    first = said(searchplay(home, "assets", "build", "wiki"))
    assert "wiki: built by an older searchplay, without checksums of its files; rebuilding it" in first, first
    assert "0 built, 1 up to date" in said(searchplay(home, "assets", "build", "wiki"))
