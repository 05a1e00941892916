"""Proposer seeds: (answer, hops) pairs, from the bundled `wiki-seeds` or a jsonl file.

A seed line needs an answer (`answer`, or `ground_truth` as a string, a list whose first item
is the answer and the rest aliases, or `{"target": [...]}`) and a hop count (`hops` or
`search_turns`). `aliases` and any other fields (example questions, ids) are kept in `extra`.
Sampling is seeded and without replacement within an epoch, so a run is reproducible.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from searchplay.jsonl import parse_jsonl, random_state


class SeedError(ValueError):
    """A seeds file that cannot be used; names file, line and field."""


@dataclass(frozen=True)
class Seed:
    answer: str
    hops: int
    aliases: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def golden(self) -> list[str]:
        return [self.answer, *self.aliases]


def _answers(value: Any) -> list[str]:
    if isinstance(value, dict):
        value = value.get("target")
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        raise ValueError('must be a non-empty string, a list of strings or {"target": [...]}')
    return [v.strip() for v in value]


def seed_from_record(record: Any) -> Seed:
    if not isinstance(record, dict):
        raise ValueError("expected a JSON object")
    key = "answer" if "answer" in record else "ground_truth" if "ground_truth" in record else None
    if key is None:
        raise ValueError("missing field 'answer' (or 'ground_truth')")
    try:
        answers = _answers(record[key])
    except ValueError as e:
        raise ValueError(f"field {key!r} {e}") from None
    hops_key = "hops" if "hops" in record else "search_turns" if "search_turns" in record else None
    if hops_key is None:
        raise ValueError("missing field 'hops' (or 'search_turns')")
    hops = record[hops_key]
    if not isinstance(hops, int) or isinstance(hops, bool) or hops < 1:
        raise ValueError(f"field {hops_key!r} must be a positive integer, got {hops!r}")
    aliases = record.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise ValueError("field 'aliases' must be a list of strings")
    extra = {k: v for k, v in record.items() if k not in (key, hops_key, "aliases")}
    return Seed(answers[0], hops, tuple(dict.fromkeys(answers[1:] + aliases)), extra)


def seed_passage(seed: Seed) -> tuple[str, str]:
    """(passage, title) of an extractive seed (wiki-span-seeds has both); a clear error when it has none."""
    passage, title = seed.extra.get("passage"), seed.extra.get("title", "")
    if not isinstance(passage, str) or not passage.strip():
        raise SeedError(
            f"seed {seed.answer!r} has no 'passage': the extractive game needs seeds with the passage their answer is "
            "a span of (game.seeds = 'bundled' gives wiki-span-seeds)"
        )
    return passage, str(title)


def load_seeds(source: str) -> list[Seed]:
    """Seeds from a jsonl file ('bundled' is resolved to a path by assets.names before this)."""
    path = Path(source)
    if not path.is_file():
        raise SeedError(f"seeds file {path} does not exist")
    seeds = parse_jsonl(path, lambda record, _: seed_from_record(record), SeedError)
    if not seeds:
        raise SeedError(f"seeds file {path} holds no seeds")
    return seeds


def labelled_seeds(records: list[dict[str, Any]]) -> list[Seed]:
    """QA records as seeds for the supervised control: the question and id ride in `extra`."""
    return [
        Seed(r["golden_answers"][0], 1, tuple(r["golden_answers"][1:]), {"question": r["question"], "id": r["id"]})
        for r in records
    ]


class SeedSampler:
    """Draws batches without replacement; reshuffles (seeded) when the seeds run out."""

    def __init__(self, seeds: list[Seed], seed: int = 0):
        self.seeds, self.rng = seeds, random.Random(seed)
        self.order: list[int] = []
        self.drawn = 0  # total draws so far: the position to restore on resume

    def sample(self, n: int) -> list[Seed]:
        out = []
        for _ in range(n):
            if not self.order:
                self.order = list(range(len(self.seeds)))
                self.rng.shuffle(self.order)
            out.append(self.seeds[self.order.pop()])
            self.drawn += 1
        return out

    def state(self) -> dict[str, Any]:
        return {"drawn": self.drawn, "order": list(self.order), "rng": self.rng.getstate()}

    def restore(self, state: dict[str, Any]) -> None:
        self.drawn, self.order = state["drawn"], list(state["order"])
        self.rng.setstate(random_state(state["rng"]))
