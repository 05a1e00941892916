"""CPU time of the two halves of a training step, to compare two versions of searchplay on one machine.

    .venv/bin/python benchmarks/cpu_steps.py [--batch 16] [--repeats 3]

Rollouts: `run_episodes` of the bundled SmolLM2-135M (the learner's fp32 weights, bf16 autocast,
as the trainer runs them) on `--batch` NQ questions over the bundled BM25, guided, 3 turns, greedy.
Update: one `Learner.update` (bf16 autocast, KL off) on those trajectories with alternating
advantages. Prints the median of `--repeats` of each. It calls only APIs that also existed before
`model.device` was added, so the same file runs in a checkout of the version before it (how the
"CPU speed did not regress" figures in benchmarks/README.md were taken).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from common import print_table

import searchplay
from searchplay.agent.rollout import chat_prompt_ids, run_episodes
from searchplay.assets import asset_file
from searchplay.assets.names import BUNDLED, model_path
from searchplay.config import LearnerConfig, RolloutConfig
from searchplay.game.prompts import solver_messages
from searchplay.jsonl import read_jsonl
from searchplay.llm.transformers_engine import TransformersEngine, load_model
from searchplay.rl.learner import Learner, Sample
from searchplay.search.bm25 import Bm25Retriever


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    questions = [r["question"] for r in read_jsonl(asset_file("nq-answerable"))][: args.batch]
    retriever = Bm25Retriever(asset_file("wiki-bm25"))
    model, tokenizer = load_model(str(model_path(BUNDLED)), "float32")
    engine = TransformersEngine(model, tokenizer, threads=2, autocast_bf16=True)
    cfg = RolloutConfig(scaffold="guided", max_turns=3, max_new_tokens=24, temperature=0.0, seed=0)
    prompts = [chat_prompt_ids(tokenizer, *solver_messages(q)) for q in questions]
    rollout_s, update_s = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        trajs = run_episodes(engine, retriever, prompts, cfg, "answer", 3)
        rollout_s.append(time.perf_counter() - t0)
        learner = Learner(model, LearnerConfig(lr=0.0, kl_coef=0.0, bf16=True), pad_id=engine.pad_id)
        samples = [Sample.from_trajectory(t, 1.0 if i % 2 else -1.0) for i, t in enumerate(trajs)]
        t0 = time.perf_counter()
        learner.update(samples)
        update_s.append(time.perf_counter() - t0)
    where = Path(searchplay.__file__).resolve().parents[1]
    print_table(
        f"CPU step halves, batch {args.batch}, median of {args.repeats} ({where})",
        [{"rollouts s": f"{statistics.median(rollout_s):.2f}", "update s": f"{statistics.median(update_s):.2f}"}],
    )
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")


if __name__ == "__main__":
    main()
