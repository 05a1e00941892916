"""Two indexes used together must come from one corpus (reliability v2, finding 6).

A real BM25 index built from 50 passages of the bundled corpus, fused with the bundled dense index
(built from the whole corpus): before, hybrid search alternated between the two corpora without a
word; now it is refused before either index loads, naming both indexes and their checksums.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from searchplay.assets.names import corpus_path, index_path
from searchplay.config import Config
from searchplay.search.bm25 import IndexMismatchError, build_bm25_index, check_same_corpus

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def other_index(cfg: Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("other")
    corpus = folder / "fifty.jsonl"
    corpus.write_text("".join(corpus_path("bundled", cfg).read_text().splitlines(keepends=True)[:50]))
    build_bm25_index(corpus, folder / "bm25", progress=False)
    return folder / "bm25"


def test_hybrid_over_indexes_of_two_corpora_is_refused_naming_both(other_index: Path, cfg: Config) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "searchplay", "search", "capital of France", "--kind", "hybrid", "--index", str(other_index)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    said = " ".join(out.stderr.split())
    assert out.returncode != 0 and "Traceback" not in out.stderr
    assert "indexes built from different corpora cannot be used together" in said, said[-1000:]
    assert str(other_index) in said and str(index_path("bundled", "dense", cfg)) in said


def test_indexes_of_one_corpus_pass(cfg: Config, other_index: Path) -> None:
    check_same_corpus(index_path("bundled", "bm25", cfg), index_path("bundled", "dense", cfg))
    with pytest.raises(IndexMismatchError, match="sha256"):
        check_same_corpus(index_path("bundled", "dense", cfg), other_index)
