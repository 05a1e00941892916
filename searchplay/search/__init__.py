"""Retrieval: corpus formats, BM25 (tantivy), dense, hybrid, HTTP server and client, cache."""

from searchplay.search.base import Hit, Retriever, SearchError, render_hits

__all__ = ["Hit", "Retriever", "SearchError", "render_hits"]
