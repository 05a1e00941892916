"""Dense and hybrid retrieval with the bundled all-MiniLM-L6-v2 encoder (the `dense` extra)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from searchplay.assets.names import corpus_path, index_path, resolve_search
from searchplay.config import Config, SearchConfig
from searchplay.search.base import SearchError
from searchplay.search.corpus import CorpusError
from searchplay.search.dense import EMBEDDINGS, PROGRESS, DenseRetriever, build_dense_index
from searchplay.search.resolve import open_local_retriever


@pytest.fixture(scope="module")
def small_corpus(cfg: Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 real passages, Paris among them."""
    lines = corpus_path("bundled", cfg).read_text().splitlines()
    chosen = [line for line in lines if json.loads(line)["id"] in ("sum:Paris", "sum:France", "sum:Hamlet")]
    chosen += lines[:117]
    path = tmp_path_factory.mktemp("dense") / "small.jsonl"
    path.write_text("\n".join(chosen) + "\n")
    return path


def test_bundled_dense_index_finds_paris(cfg: Config) -> None:
    dense = DenseRetriever(index_path("bundled", "dense", cfg), corpus=corpus_path("bundled", cfg))
    hits = dense.search(["capital of France", "Who wrote Hamlet?"], 3)
    assert "sum:Paris" in [h.id for h in hits[0]]
    assert hits[1][0].id == "sum:Hamlet"
    assert hits[0][0].score >= hits[0][1].score >= hits[0][2].score


def test_hybrid_fuses_bm25_and_dense(cfg: Config) -> None:
    hybrid = open_local_retriever(resolve_search(SearchConfig(kind="hybrid"), cfg))
    fused = hybrid.search(["capital of France"], 5)[0]
    sides = [r.search(["capital of France"], 20)[0] for r in hybrid.retrievers]  # depth max(4 x 5, 10)
    rank = [{h.id: i for i, h in enumerate(side, 1)} for side in sides]
    expected = {pid: sum(1 / (60 + r[pid]) for r in rank if pid in r) for pid in set(rank[0]) | set(rank[1])}
    assert [h.id for h in fused] == sorted(expected, key=lambda pid: (-expected[pid], pid))[:5]
    assert [h.score for h in fused] == pytest.approx(sorted(expected.values(), reverse=True)[:5])
    both = [h.id for h in fused if all(h.id in r for r in rank)]
    assert both and fused[0].id in both  # a passage both sides rank high wins over either side's own favourite


def test_interrupted_build_resumes_to_the_same_embeddings(small_corpus: Path, tmp_path: Path) -> None:
    partial = build_dense_index(small_corpus, tmp_path / "a", chunk_rows=32, progress=False, stop_after_rows=64)
    building = tmp_path / "a.building"  # written beside the target, swapped in when complete
    assert partial["interrupted"] and json.loads((building / PROGRESS).read_text())["done"] == 64
    assert not (tmp_path / "a").exists()
    with pytest.raises(SearchError, match="not a searchplay index"):
        DenseRetriever(building)  # an unfinished index cannot be opened
    meta = build_dense_index(small_corpus, tmp_path / "a", chunk_rows=32, progress=False)
    fresh = build_dense_index(small_corpus, tmp_path / "b", chunk_rows=1000, progress=False)
    assert meta["passages"] == fresh["passages"] == 120
    a = np.fromfile(tmp_path / "a" / EMBEDDINGS, dtype=np.float16).reshape(120, -1)
    b = np.fromfile(tmp_path / "b" / EMBEDDINGS, dtype=np.float16).reshape(120, -1)
    assert np.abs(a.astype(np.float32) - b.astype(np.float32)).max() < 2e-3
    assert np.abs(np.linalg.norm(a.astype(np.float32), axis=1) - 1).max() < 1e-2  # normalised
    r = DenseRetriever(tmp_path / "a", corpus=small_corpus)
    assert r.search(["capital of France"], 2)[0][0].id in ("sum:Paris", "sum:France")
    assert not building.exists() and not (tmp_path / "a" / PROGRESS).exists()


def test_prefixes_are_recorded_and_used(small_corpus: Path, tmp_path: Path) -> None:
    meta = build_dense_index(small_corpus, tmp_path / "e5", query_prefix="query: ", passage_prefix="passage: ", progress=False)
    assert (meta["query_prefix"], meta["passage_prefix"]) == ("query: ", "passage: ")
    plain = DenseRetriever(tmp_path / "e5")
    with_prefix = plain.encode_queries(["Paris"])
    plain.meta = {**plain.meta, "query_prefix": ""}
    assert not np.allclose(with_prefix, plain.encode_queries(["Paris"]))


def test_faiss_indexes_agree_with_exact_search(small_corpus: Path, tmp_path: Path) -> None:
    build_dense_index(small_corpus, tmp_path / "d", progress=False)
    exact = DenseRetriever(tmp_path / "d").search(["capital of France", "tragedy by Shakespeare"], 3)
    for kind in ("flat", "hnsw"):
        approx = DenseRetriever(tmp_path / "d", faiss=kind).search(["capital of France", "tragedy by Shakespeare"], 3)
        assert [h.id for h in approx[0]] == [h.id for h in exact[0]]
        assert approx[1][0].id == exact[1][0].id == "sum:Hamlet"
        assert (tmp_path / "d" / f"faiss-{kind}.index").is_file()


def test_parquet_corpus_is_refused_for_dense_with_a_reason(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "c.parquet"
    pq.write_table(pa.table({"id": ["1"], "title": ["T"], "text": ["x"]}), path)
    with pytest.raises(CorpusError, match="needs a jsonl corpus"):
        build_dense_index(path, tmp_path / "d", progress=False)
