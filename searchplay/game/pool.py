"""The question pool: every verified question with its provenance and solver results.

On disk it is an append-only jsonl log of events, replayed on load:
- `{"type": "question", ...}`: a newly verified question (full provenance, first results);
- `{"type": "attempt", "id", "step", "solver_rewards", "success_rate"}`: a reused question solved again;
- `{"type": "clear", "step", "keep_ids"}`: pool maintenance kept only these questions.

Each event is one `write` of one line followed by flush + fsync, so a crash can only tear the
last line; loading drops a torn last line, reports it (`torn_lines`) and truncates the file
there so that later appends stay well-formed.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from searchplay.jsonl import append_jsonl


@dataclass
class PoolQuestion:
    id: str
    question: str
    answer: str
    aliases: list[str]
    hops: int
    step: int
    proposer_trajectory: str
    evidence_ids: list[str]
    noisy_ids: list[str]
    verifier_answer: str | None
    verdict: str
    solver_rewards: list[float]
    success_rate: float
    seed_extra: dict[str, Any] = field(default_factory=dict)
    attempts: int = 1


class PoolError(ValueError):
    """A pool file that is damaged beyond its last line."""


class QuestionPool:
    """The pool of a run. `read_only` (a viewer beside a running trainer) leaves the file as it is,
    a torn last line included, and keeps the questions that maintenance dropped in `cleared`."""

    def __init__(self, path: str | Path | None = None, read_only: bool = False):
        self.path = Path(path) if path else None
        self.read_only = read_only
        self.questions: dict[str, PoolQuestion] = {}  # insertion order = age
        self.cleared: dict[str, tuple[PoolQuestion, int]] = {}  # read-only: dropped question -> step of the clear
        self.events = 0
        self.torn_lines = 0
        if self.path and self.path.exists():
            self._load()

    def _load(self) -> None:
        assert self.path is not None
        data = self.path.read_bytes()
        good_end = 0
        lines = data.split(b"\n")
        for i, raw in enumerate(lines):
            is_last = i == len(lines) - 1
            if not raw.strip():
                good_end += len(raw) + (0 if is_last else 1)
                continue
            try:
                event = json.loads(raw)
            except (json.JSONDecodeError, ValueError) as e:
                if is_last:
                    self.torn_lines += 1
                    break
                raise PoolError(f"{self.path}:{i + 1}: damaged record ({e}); only the last line may be torn") from None
            self._apply(event)
            self.events += 1
            good_end += len(raw) + 1  # a complete last record cut before its newline gets one below
        if good_end != len(data) and not self.read_only:
            with open(self.path, "r+b") as f:
                f.truncate(min(good_end, len(data)))
                if good_end > len(data):
                    f.seek(0, os.SEEK_END)
                    f.write(b"\n")

    def _apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "question":
            fields = {k: v for k, v in event.items() if k != "type"}
            self.questions[fields["id"]] = PoolQuestion(**fields)
        elif kind == "attempt":
            q = self.questions.get(event["id"])
            if q is not None:
                q.solver_rewards, q.success_rate = event["solver_rewards"], event["success_rate"]
                q.attempts += 1
        elif kind == "clear":
            keep = set(event["keep_ids"])
            if self.read_only:
                self.cleared.update({k: (v, event["step"]) for k, v in self.questions.items() if k not in keep})
            self.questions = {k: v for k, v in self.questions.items() if k in keep}

    def _append(self, event: dict[str, Any]) -> None:
        if self.read_only:
            raise PoolError(f"{self.path} was opened read-only")
        self._apply(event)
        self.events += 1
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        append_jsonl(self.path, [event])

    def add(self, q: PoolQuestion) -> None:
        self._append({"type": "question", **asdict(q)})

    def record_attempt(self, qid: str, step: int, rewards: list[float], success: float) -> None:
        self._append({"type": "attempt", "id": qid, "step": step, "solver_rewards": rewards, "success_rate": success})

    def reusable(self, threshold: float) -> list[PoolQuestion]:
        return [q for q in self.questions.values() if q.success_rate <= threshold]

    def sample_reusable(self, n: int, threshold: float, rng: random.Random, with_replacement: bool = False) -> list[PoolQuestion]:
        """Up to n distinct questions with success rate <= threshold (all of them if fewer); or, with
        replacement (SSP's code), exactly n draws, from the whole pool when none is under the threshold."""
        candidates = self.reusable(threshold)
        if with_replacement:
            source = candidates or list(self.questions.values())
            return [rng.choice(source) for _ in range(n)] if source else []
        return rng.sample(candidates, min(n, len(candidates)))

    def clear(self, keep_ratio: float, step: int) -> int:
        """Keep the newest keep_ratio of the questions; returns how many were dropped."""
        ids = list(self.questions)
        keep = ids[len(ids) - int(len(ids) * keep_ratio) :] if keep_ratio > 0 else []
        self._append({"type": "clear", "step": step, "keep_ids": keep})
        return len(ids) - len(keep)

    def __len__(self) -> int:
        return len(self.questions)
