"""Retrieval for the Ray backend: one retriever actor per node, shared by the rollout workers on it.

Search-R1's users learned that one retriever on the head node becomes the bottleneck once rollouts
spread over machines; a retriever per node keeps searches local (each node reads the index from
its own disk or the shared storage, and its LRU cache serves every worker there). With
`search.url` set, workers call that shared server instead and no retriever actors start.

A search that fails inside the actor arrives as the SearchError it raised; an actor that died is
a SearchError too, so both count as infrastructure failures, never as the model's.
"""

from __future__ import annotations

from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from searchplay.config import SearchConfig
from searchplay.search.base import Hit, Retriever, SearchError
from searchplay.search.resolve import open_retriever


class RetrieverActor:
    """Holds one node's retriever (index in memory, cache) and answers batched searches."""

    def __init__(self, search: SearchConfig):
        self.retriever = open_retriever(search)

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        return self.retriever.search(queries, k)

    def stats(self) -> dict[str, float]:
        stats = getattr(self.retriever, "stats", None)
        return dict(stats()) if callable(stats) else {}


class NodeRetriever:
    """A Retriever that searches through the retriever actor of the caller's node."""

    def __init__(self, actors: dict[str, Any]):
        """`actors`: retriever actor handles by node id (all of them: stats are summed over nodes)."""
        self.actors = actors
        node = ray.get_runtime_context().get_node_id()
        self.actor = actors.get(node) or next(iter(actors.values()))  # a node that joined later uses another's

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        try:
            return ray.get(self.actor.search.remote(queries, k))
        except SearchError:
            raise
        except ray.exceptions.RayActorError as e:
            raise SearchError(f"the retriever actor of this node died: {e}") from None

    def stats(self) -> dict[str, float]:
        """Cache counters summed over every node's retriever."""
        total: dict[str, float] = {}
        for stats in ray.get([a.stats.remote() for a in self.actors.values()]):
            for key, value in stats.items():
                total[key] = total.get(key, 0.0) + float(value)
        return total


def start_node_retrievers(search: SearchConfig) -> dict[str, Any]:
    """One RetrieverActor on every live node, by node id; they take no CPU slot (they wait on requests)."""
    actor_cls: Any = ray.remote(num_cpus=0)(RetrieverActor)
    nodes = [n["NodeID"] for n in ray.nodes() if n.get("Alive")]
    actors = {
        node: actor_cls.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)).remote(search)
        for node in nodes
    }
    try:
        ray.get([a.stats.remote() for a in actors.values()])  # loaded: an index error surfaces before the run starts
    except ray.exceptions.RayActorError as e:
        raise SearchError(f"the retriever actors could not open the index: {e}") from None
    return actors


def worker_retriever(search: SearchConfig, actors: dict[str, Any]) -> Retriever:
    """What a rollout worker searches with: the shared server at `search.url`, else its node's actor."""
    return open_retriever(search) if search.url else NodeRetriever(actors)
