"""The Ray backend on this machine: rollout throughput with 1 vs 2 rollout workers, step time, weight sync.

    .venv/bin/python benchmarks/scaling.py [--batch 16] [--repeats 3] [--steps 3] [--skip-training]

Rollouts: one batch of --batch NQ questions (bundled SmolLM2-135M, fp32 weights under bf16
autocast as the trainer runs them, transformers engine, bundled BM25 top 3, guided, 3 turns, at
most 32 new tokens per turn, greedy so that every setting does the same work) played
  - in this process, all cores (what trainer.backend = "local" does),
  - by 1 Ray rollout worker (all cores),
  - by 2 Ray rollout workers (half the cores each: model.threads = 0 shares them).
Median of --repeats after one warm-up; tokens/s counts sampled tokens.

Training: --steps steps (default 4) of the embedded default (configs/cpu-smollm2.toml, transformers engine,
model.threads = 0, evaluation off) with the local backend and with Ray at (rollout, learner)
workers (1, 1), (2, 1), (2, 2); the mean of each timing over steps 2.. (step 1 also warms up),
and the weight sync (timing/weight_sync_s, sync/weight_mib) of the Ray runs, by each route of
trainer.weight_sync (fp32 through the object store; broadcast over a gloo group; ipc, each learner rank
pushing to the rollout worker of its index; fp32 for this engine on every route).

On 2 cores two workers cannot be much faster than one: the figures show the cost of the split
(processes, object store, per-worker batches), not the gain of more machines.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import ray
from common import print_table
from transformers import AutoTokenizer

from searchplay.agent.rollout import chat_prompt_ids, run_episodes
from searchplay.assets import asset_file
from searchplay.assets.names import BUNDLED, model_path, resolve_config
from searchplay.config import load_config
from searchplay.game.prompts import solver_messages
from searchplay.jsonl import read_jsonl
from searchplay.llm.transformers_engine import TransformersEngine, load_model
from searchplay.search.bm25 import Bm25Retriever
from searchplay.train.ray_retrieval import start_node_retrievers
from searchplay.train.ray_rollout import RolloutWorkers
from searchplay.train.trainer import train

ROOT = Path(__file__).resolve().parents[1]
ROLES = ("solver", "proposer")
ROLLOUT = ["rollout.max_turns=3", "rollout.max_new_tokens=32", "rollout.temperature=0", "search.kind=bm25"]


def median_rate(play, repeats: int) -> tuple[float, float, int]:
    """(median seconds, median sampled tokens/s, episodes) of `play()` after one warm-up."""
    play()
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        trajs = play()
        runs.append((time.perf_counter() - t0, sum(t.generated_tokens for t in trajs)))
    seconds = statistics.median(s for s, _ in runs)
    return seconds, statistics.median(n / s for s, n in runs), len(trajs)


def rollouts(batch: int, repeats: int) -> list[dict]:
    overrides = [*ROLLOUT, "model.threads=0", "model.engine=transformers"]
    cfg = resolve_config(load_config(ROOT / "configs/cpu-smollm2.toml", overrides))
    weights = str(model_path(BUNDLED))
    tokenizer = AutoTokenizer.from_pretrained(weights)
    questions = [r["question"] for r in read_jsonl(asset_file("nq-answerable"))][:batch]
    prompts = [chat_prompt_ids(tokenizer, *solver_messages(q)) for q in questions]

    def row(setting: str, play) -> dict:
        seconds, rate, n = median_rate(play, repeats)
        return {"setting": setting, "episodes": n, "seconds": f"{seconds:.2f}", "tok/s": f"{rate:.1f}"}

    local = TransformersEngine(load_model(weights, "float32")[0], tokenizer, threads=os.cpu_count() or 1, autocast_bf16=True)
    retriever = Bm25Retriever(asset_file("wiki-bm25"))
    rows = [row("this process (local backend)", lambda: run_episodes(local, retriever, prompts, cfg.rollout, "answer", 3))]
    local.model = None  # free the local copy before the workers load theirs
    retrievers = start_node_retrievers(cfg.search)
    for workers in (1, 2):
        cfg.trainer.rollout_workers = workers
        pool = RolloutWorkers(cfg, weights, retrievers, tokenizer, [{"num_cpus": 1}] * workers, f"bench{workers}")
        try:
            play = lambda p=pool: p.run_episodes(prompts, cfg.rollout, "answer", 3, None)  # noqa: E731
            rows.append(row(f"{workers} Ray rollout worker(s)", play))
        finally:
            pool.close()
    for actor in retrievers.values():
        ray.kill(actor)
    base = float(rows[0]["tok/s"])
    for r in rows:
        r["vs this process"] = f"{float(r['tok/s']) / base:.2f}x"
    return rows


def training(steps: int) -> list[dict]:
    keys = ["timing/step_s", "timing/proposer_s", "timing/solver_s", "timing/update_s", "timing/weight_sync_s", "sync/weight_mib"]
    rows = []
    settings = [
        ("local", None, ""),
        ("ray", (1, 1), "object_store"),
        ("ray", (2, 1), "object_store"),
        ("ray", (2, 1), "broadcast"),
    ]
    settings += [("ray", (2, 2), route) for route in ("object_store", "broadcast", "ipc")]  # ipc: a rollout worker per rank
    for backend, workers, route in settings:
        overrides = ["model.engine=transformers", "model.threads=0", "trainer.eval_every=0", f"trainer.steps={steps}",
                     f"trainer.save_every={steps}", f"trainer.backend={backend}"]  # fmt: skip
        if workers:
            overrides += [f"trainer.rollout_workers={workers[0]}", f"trainer.learner_workers={workers[1]}"]
            overrides += [f"trainer.weight_sync={route}"]
        cfg = load_config(ROOT / "configs/cpu-smollm2.toml", overrides)
        with tempfile.TemporaryDirectory() as tmp:
            train(cfg, Path(tmp) / "run")
            lines = [json.loads(x) for x in (Path(tmp) / "run/metrics.jsonl").read_text().splitlines()][1:]
        label = "local" if not workers else f"ray {workers[0]} rollout + {workers[1]} learner, {route}"
        row = {"backend": label}
        for k in keys:
            values = [m[k] for m in lines if k in m]
            row[k.split("/")[1]] = f"{statistics.fmean(values):.2f}" if values else "-"
        # sampled episodes and dynamic sampling make each run's batches differ: the work done, and its rate
        row["samples trained"] = f"{statistics.fmean(sum(m.get(f'{r}_update/samples', 0) for r in ROLES) for m in lines):.1f}"
        rates = [m[f"{r}_update/tokens_per_s"] for m in lines for r in ROLES if f"{r}_update/tokens_per_s" in m]
        row["learner tok/s"] = f"{statistics.fmean(rates):.0f}"
        rows.append(row)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--skip-training", action="store_true")
    ap.add_argument("--skip-rollouts", action="store_true")
    args = ap.parse_args()
    ray.init(address="local", num_cpus=6, include_dashboard=False, runtime_env={"env_vars": {"OMP_WAIT_POLICY": "PASSIVE"}})
    print(f"{os.cpu_count()} cores, Ray {ray.__version__}")
    if not args.skip_rollouts:
        print_table(f"Rollouts: {args.batch} NQ questions, greedy, 3 turns x 32 tokens", rollouts(args.batch, args.repeats))
    if not args.skip_training:
        print_table(f"Training steps of the embedded default (mean over steps 2-{args.steps})", training(args.steps))
    ray.shutdown()


if __name__ == "__main__":
    main()
