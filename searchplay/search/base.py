"""What every retriever shares: the Hit record, the Retriever protocol, rendering for the agent."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Protocol, runtime_checkable

from searchplay.search.corpus import Passage


class SearchError(RuntimeError):
    """A search that could not be carried out (server down, retries spent, bad index)."""


@dataclass(frozen=True)
class Hit:
    id: str
    title: str
    text: str
    score: float

    @property
    def contents(self) -> str:
        return Passage(self.id, self.title, self.text).contents

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


@runtime_checkable
class Retriever(Protocol):
    """Batched search: one list of hits (best first) per query."""

    def search(self, queries: list[str], k: int) -> list[list[Hit]]: ...


def search_or_none(retriever: Retriever, queries: list[str], k: int) -> list[list[Hit] | None]:
    """One batched search; when it fails, None for every query (an infrastructure failure, not a model's)."""
    try:
        return list(retriever.search(queries, k))
    except SearchError:
        return [None] * len(queries)


def render_hits(hits: list[Hit]) -> str:
    """The text the agent reads inside <information>: one `Doc i (Title: ...) text` line per hit."""
    return "\n".join(f"Doc {i} (Title: {h.title}) {h.text}" for i, h in enumerate(hits, 1))


class NoRetriever:
    """Closed-book baseline: every search returns nothing."""

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        return [[] for _ in queries]
