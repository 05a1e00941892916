"""Turn config values (paths or the word `bundled`) into corpora, index directories and retrievers."""

from __future__ import annotations

from pathlib import Path

from searchplay.config import Config, SearchConfig
from searchplay.search.base import Retriever, SearchError

BUNDLED = "bundled"


def resolve_corpus(value: str, cfg: Config | None = None) -> Path:
    from searchplay.assets import asset_file

    return asset_file("wiki", cfg) if value == BUNDLED else Path(value)


def resolve_index(value: str, kind: str = "bm25", cfg: Config | None = None) -> Path:
    from searchplay.assets import asset_file

    if value == BUNDLED:
        return asset_file("wiki-bm25" if kind == "bm25" else "wiki-minilm", cfg)
    path = Path(value)
    if not path.is_dir():
        raise SearchError(f"index directory {path} does not exist; build one with: searchplay index build --kind {kind}")
    return path


def open_retriever(cfg: Config, search: SearchConfig | None = None) -> Retriever:
    """The retriever a config asks for (HTTP when `url` is set), behind the LRU cache if enabled."""
    from searchplay.search.cache import CachedRetriever

    s = search or cfg.search
    retriever: Retriever
    if s.url:
        from searchplay.search.client import HttpRetriever

        retriever = HttpRetriever(s.url, s.timeout_s, s.retries)
    else:
        retriever = open_local_retriever(s, cfg)
    return CachedRetriever(retriever, s.cache_size) if s.cache_size > 0 else retriever


def open_local_retriever(s: SearchConfig, cfg: Config | None = None) -> Retriever:
    from searchplay.search.bm25 import Bm25Retriever

    if s.kind == "bm25":
        return Bm25Retriever(resolve_index(s.index, "bm25", cfg))
    from searchplay.search.dense import DenseRetriever

    dense = DenseRetriever(resolve_index(s.dense_index, "dense", cfg), faiss=s.faiss)
    if s.kind == "dense":
        return dense
    from searchplay.search.hybrid import HybridRetriever

    return HybridRetriever([Bm25Retriever(resolve_index(s.index, "bm25", cfg)), dense], rrf_k=s.rrf_k)
