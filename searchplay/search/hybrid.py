"""Hybrid retrieval: BM25 and dense results fused by reciprocal rank (RRF).

Each retriever returns its top `depth` hits (default 4k); a passage's fused score is
sum over retrievers of 1 / (rrf_k + rank), rank starting at 1. RRF needs no score calibration
between BM25 scores and cosine similarities, which is why it is the usual choice here.
"""

from __future__ import annotations

from searchplay.search.base import Hit, Retriever


def reciprocal_rank_fusion(rankings: list[list[Hit]], k: int, rrf_k: int = 60) -> list[Hit]:
    fused: dict[str, float] = {}
    first_seen: dict[str, Hit] = {}
    for hits in rankings:
        for rank, hit in enumerate(hits, 1):
            fused[hit.id] = fused.get(hit.id, 0.0) + 1.0 / (rrf_k + rank)
            first_seen.setdefault(hit.id, hit)
    order = sorted(fused, key=lambda pid: (-fused[pid], pid))[:k]
    return [Hit(pid, first_seen[pid].title, first_seen[pid].text, fused[pid]) for pid in order]


class HybridRetriever:
    def __init__(self, retrievers: list[Retriever], rrf_k: int = 60, depth_factor: int = 4):
        self.retrievers, self.rrf_k, self.depth_factor = retrievers, rrf_k, depth_factor

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        depth = max(k * self.depth_factor, 10)
        per_retriever = [r.search(queries, depth) for r in self.retrievers]
        return [reciprocal_rank_fusion([res[i] for res in per_retriever], k, self.rrf_k) for i in range(len(queries))]
