"""The run directory layout that `play`, `train` and evaluation tools share.

RUN_DIR/config.toml          resolved configuration
RUN_DIR/metrics.jsonl        one JSON line of metrics per step
RUN_DIR/trajectories/        step-000001.jsonl ... (both roles, with rewards and advantages; a
                             proposer's `meta` holds its extracted question, the filter that
                             rejected it, and the verifier's verdict, answer and input documents;
                             `prompt_text` and `response_segments` [[text, trained], ...] are the
                             decoded prompt and response, cut where sampled and inserted tokens meet)
RUN_DIR/pool.jsonl           the question pool's event log
RUN_DIR/checkpoints/step-N/  checkpoints (training only)
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from searchplay.agent.trajectory import Trajectory
from searchplay.config import Config, to_toml
from searchplay.jsonl import append_jsonl, atomic_write


def response_segments(t: Trajectory, tokenizer: Any) -> list[tuple[str, int]]:
    """The response decoded in runs of equal loss mask: (text, 1) was sampled and trained, (text, 0) inserted."""
    segments: list[tuple[str, int]] = []
    start = 0
    for i in range(1, len(t.response_ids) + 1):
        if i == len(t.response_ids) or t.loss_mask[i] != t.loss_mask[start]:
            segments.append((tokenizer.decode(t.response_ids[start:i], skip_special_tokens=False), t.loss_mask[start]))
            start = i
    return segments


def default_run_dir() -> Path:
    return Path("runs") / time.strftime("%Y%m%d-%H%M%S")


@dataclass
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.jsonl"

    @property
    def trajectories(self) -> Path:
        return self.root / "trajectories"

    @property
    def pool(self) -> Path:
        return self.root / "pool.jsonl"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    def create(self, cfg: Config, notes: Sequence[str] = ()) -> RunDir:
        """The folder and its config.toml; `notes` (what each `auto` setting became here, and why) head the file."""
        self.trajectories.mkdir(parents=True, exist_ok=True)
        header = "".join(f"# resolved on this machine: {note}\n" for note in notes)
        atomic_write(self.config, (header + ("\n" if header else "") + to_toml(cfg)).encode())  # never half a file
        return self

    def append_jsonl(self, path: Path, record: dict[str, Any]) -> None:
        """One line, one write, fsynced: a crash loses at most the line being written."""
        append_jsonl(path, [record])

    def write_trajectories(self, step: int, trajectories: list[Trajectory], tokenizer: Any = None) -> Path:
        path = self.trajectories / f"step-{step:06d}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for t in trajectories:
                record = t.to_dict()
                record["logprobs"] = [round(x, 4) for x in t.logprobs]  # a third of the file at full precision
                if tokenizer is not None:
                    record["prompt_text"] = tokenizer.decode(t.prompt_ids, skip_special_tokens=False)
                    record["response_segments"] = response_segments(t, tokenizer)
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
        return path

    def read_metrics(self) -> list[dict[str, Any]]:
        if not self.metrics.exists():
            return []
        out = []
        for line in self.metrics.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:  # a line torn by a crash
                continue
        return out
