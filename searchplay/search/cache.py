"""An LRU cache in front of any retriever: (query, k) -> hits, with hit/miss counters.

Self-play issues the same searches often (several solver rollouts of one question, reused
pool questions); only the queries not in the cache reach the retriever, in one batch.
"""

from __future__ import annotations

from collections import OrderedDict

from searchplay.search.base import Hit, Retriever


class CachedRetriever:
    def __init__(self, inner: Retriever, size: int = 10_000):
        self.inner, self.size = inner, size
        self._cache: OrderedDict[tuple[str, int], list[Hit]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        results: list[list[Hit] | None] = []
        missing: dict[str, None] = {}
        for q in queries:
            cached = self._cache.get((q, k))
            if cached is not None:
                self._cache.move_to_end((q, k))
                self.hits += 1
            else:
                self.misses += 1
                missing[q] = None
            results.append(cached)
        if missing:
            fetched = dict(zip(missing, self.inner.search(list(missing), k)))
            for q, hits in fetched.items():
                self._cache[(q, k)] = hits
            while len(self._cache) > self.size:
                self._cache.popitem(last=False)
            return [r if r is not None else fetched[q] for r, q in zip(results, queries)]
        return [r for r in results if r is not None]  # all were cached

    def stats(self) -> dict[str, int]:
        return {"cache_hits": self.hits, "cache_misses": self.misses, "cache_entries": len(self._cache)}
