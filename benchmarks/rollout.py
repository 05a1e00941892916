"""Rollout benchmark: generated tokens/s of run_episodes vs plain batched generate vs one at a time.

Run: .venv/bin/python benchmarks/rollout.py [--batches 8 16] [--threads 2]
The bundled SmolLM2-135M (bf16 weights) with the bundled BM25 index, guided scaffold, 3 turns.
(a) the ceiling: the same engine's plain batched generate of the same number of new tokens per
sequence, no searches; (b) the same episodes run one at a time.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import peak_rss_mib, print_table  # noqa: E402

import torch  # noqa: E402

from searchplay.agent.rollout import chat_prompt_ids, run_episodes  # noqa: E402
from searchplay.assets import asset_file  # noqa: E402
from searchplay.jsonl import read_jsonl  # noqa: E402
from searchplay.config import RolloutConfig  # noqa: E402
from searchplay.game.prompts import solver_messages  # noqa: E402
from searchplay.llm.base import SamplingParams  # noqa: E402
from searchplay.llm.transformers_engine import TransformersEngine  # noqa: E402
from searchplay.search.bm25 import Bm25Retriever  # noqa: E402


def measure(engine, retriever, prompts, cfg) -> tuple[float, int, float]:  # noqa: ANN001
    t0 = time.perf_counter()
    trajs = run_episodes(engine, retriever, prompts, cfg, "answer", 3)
    seconds = time.perf_counter() - t0
    tokens = sum(t.generated_tokens for t in trajs)
    return tokens / seconds, tokens, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--max-new-tokens", type=int, default=32)
    args = ap.parse_args()
    questions = [r["question"] for r in read_jsonl(asset_file("nq-answerable"))]
    retriever = Bm25Retriever(asset_file("wiki-bm25"))
    rows = []
    for threads in args.threads:
        engine = TransformersEngine.load("bundled", "bfloat16", threads=threads)
        cfg = RolloutConfig(scaffold="guided", max_turns=3, max_new_tokens=args.max_new_tokens, temperature=1.0, seed=0)
        measure(engine, retriever, [chat_prompt_ids(engine.tokenizer, *solver_messages(questions[0]))], cfg)  # warm-up
        for batch in args.batches:
            prompts = [chat_prompt_ids(engine.tokenizer, *solver_messages(q)) for q in questions[:batch]]
            episodes_tps, tokens, seconds = measure(engine, retriever, prompts, cfg)
            per_seq = max(1, tokens // batch)
            t0 = time.perf_counter()
            outs = engine.generate(prompts, SamplingParams(temperature=1.0, max_new_tokens=per_seq, seed=0))
            ceiling_tps = sum(len(g.token_ids) for g in outs) / (time.perf_counter() - t0)
            single_tokens, single_seconds = 0, 0.0
            for p in prompts:
                _, n, s = measure(engine, retriever, [p], cfg)
                single_tokens, single_seconds = single_tokens + n, single_seconds + s
            single_tps = single_tokens / single_seconds
            rows.append({"threads": threads, "batch": batch, "episodes tok/s": episodes_tps,
                         "plain generate tok/s (ceiling)": ceiling_tps, "one at a time tok/s": single_tps,
                         "vs ceiling": episodes_tps / ceiling_tps, "vs one at a time": episodes_tps / single_tps,
                         "episode tokens": tokens, "episode s": seconds})
    print_table(f"Agent rollouts (SmolLM2-135M bf16, bundled BM25, guided, 3 turns, <= {args.max_new_tokens} tokens/turn)", rows)
    print(f"\ntorch {torch.__version__}; peak RSS {peak_rss_mib():,.0f} MiB")


if __name__ == "__main__":
    main()
