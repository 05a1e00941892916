"""The run directory layout that `play`, `train` and evaluation tools share.

RUN_DIR/config.toml          resolved configuration
RUN_DIR/metrics.jsonl        one JSON line of metrics per step
RUN_DIR/trajectories/        step-000001.jsonl ... (both roles, with rewards; a proposer's `meta`
                             holds its extracted question, the filter that rejected it, and the
                             verifier's verdict, answer and input document ids)
RUN_DIR/pool.jsonl           the question pool's event log
RUN_DIR/checkpoints/step-N/  checkpoints (training only)
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from searchplay.agent.trajectory import Trajectory
from searchplay.config import Config, to_toml
from searchplay.jsonl import append_jsonl


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

    def create(self, cfg: Config) -> RunDir:
        self.trajectories.mkdir(parents=True, exist_ok=True)
        self.config.write_text(to_toml(cfg))
        return self

    def append_jsonl(self, path: Path, record: dict[str, Any]) -> None:
        """One line, one write, fsynced: a crash loses at most the line being written."""
        append_jsonl(path, [record])

    def write_trajectories(self, step: int, trajectories: list[Trajectory], tokenizer: Any = None) -> Path:
        path = self.trajectories / f"step-{step:06d}.jsonl"
        with open(path, "w", encoding="utf-8") as f:
            for t in trajectories:
                record = t.to_dict()
                if tokenizer is not None:
                    record["response_text"] = tokenizer.decode(t.response_ids, skip_special_tokens=False)
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
