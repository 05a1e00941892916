"""Open the retriever a search config asks for. Paths only: 'bundled' is resolved above (assets.names)."""

from __future__ import annotations

from pathlib import Path

from searchplay.config import SearchConfig
from searchplay.search.base import Retriever, SearchError
from searchplay.search.bm25 import Bm25Retriever, check_same_corpus
from searchplay.search.cache import CachedRetriever
from searchplay.search.client import HttpRetriever
from searchplay.search.dense import DenseRetriever
from searchplay.search.hybrid import HybridRetriever


def index_dir(value: str, kind: str) -> Path:
    path = Path(value)
    if not path.is_dir():
        raise SearchError(f"index directory {path} does not exist; build one with: searchplay index build --kind {kind}")
    return path


def open_retriever(s: SearchConfig) -> Retriever:
    """The retriever a config asks for (HTTP when `url` is set), behind the LRU cache if enabled."""
    retriever = HttpRetriever(s.url, s.timeout_s, s.retries) if s.url else open_local_retriever(s)
    return CachedRetriever(retriever, s.cache_size) if s.cache_size > 0 else retriever


def open_local_retriever(s: SearchConfig) -> Retriever:
    if s.kind == "bm25":
        return Bm25Retriever(index_dir(s.index, "bm25"))
    dense_dir = index_dir(s.dense_index, "dense")
    if s.kind == "dense":
        return DenseRetriever(dense_dir, faiss=s.faiss)
    bm25_dir = index_dir(s.index, "bm25")
    check_same_corpus(bm25_dir, dense_dir)  # before loading either
    return HybridRetriever([Bm25Retriever(bm25_dir), DenseRetriever(dense_dir, faiss=s.faiss)], rrf_k=s.rrf_k)
