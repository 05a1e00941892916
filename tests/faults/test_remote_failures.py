"""A retrieval server that starts failing mid-run and a judge that is down, on real HTTP servers:
the training run goes on, the failures are counted, and the failed episodes stay out of the loss."""

from __future__ import annotations

import json
from pathlib import Path

from searchplay.config import ServerConfig, load_config
from searchplay.search.base import Hit, SearchError
from searchplay.search.server import create_app
from searchplay.train.trainer import train
from searchplay.web import free_port, running_server


class DyingIndex:
    """The bundled index until its `alive` budget of calls is spent, then every search fails (an index gone away)."""

    def __init__(self, inner, alive: int) -> None:
        self.inner, self.alive = inner, alive

    def search(self, queries: list[str], k: int) -> list[list[Hit]]:
        self.alive -= 1
        if self.alive < 0:
            raise SearchError("index unavailable")
        return self.inner.search(queries, k)


def test_training_survives_a_failing_retriever_server_and_a_dead_judge(bundled_bm25, tmp_path: Path) -> None:
    index = DyingIndex(bundled_bm25, alive=5)
    with running_server(create_app(index, ServerConfig())) as url:
        cfg = load_config(
            Path(__file__).resolve().parents[2] / "configs" / "tiny-test.toml",
            [
                f"search.url={url}",
                "search.retries=0",
                "search.cache_size=0",
                "trainer.steps=2",
                "trainer.eval_every=0",
                "game.solver_reward=judge",
                f"judge.base_url=http://127.0.0.1:{free_port()}/v1",
                "judge.model=nobody",
                "judge.retries=0",
                "judge.timeout_s=2",
                f"judge.cache={tmp_path / 'judge.sqlite'}",
            ],
        )
        summary = train(cfg, tmp_path / "run")
    assert summary.steps == 2
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    errors = sum(r["proposer/retriever_errors"] + r["solver/retriever_errors"] for r in rows)
    excluded = sum(r["proposer/infra_excluded"] + r["solver/infra_excluded"] for r in rows)
    assert errors > 0 and excluded > 0  # counted, and those episodes left the loss
    trained = sum(r.get("solver_update/samples", 0) + r.get("proposer_update/samples", 0) for r in rows)
    episodes = sum(r["proposer/episodes"] + r["solver/episodes"] for r in rows)
    assert trained <= episodes - excluded
    assert rows[-1]["judge/errors"] == sum(r["solver/judge_unknown"] for r in rows) > 0  # cumulative vs per step
