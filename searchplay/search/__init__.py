"""Retrieval: corpus formats, BM25 (bm25s, scored as Lucene), dense, hybrid, HTTP server and client, cache."""

from searchplay.search.base import Hit, Retriever, SearchError, render_hits

__all__ = ["Hit", "Retriever", "SearchError", "render_hits"]
