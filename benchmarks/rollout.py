"""Rollout benchmark: generated tokens/s of run_episodes vs plain batched generate vs one at a time.

Run: .venv/bin/python benchmarks/rollout.py [--batches 8 16] [--threads 2 1]
The bundled SmolLM2-135M (bf16 weights) with the bundled BM25 index, guided scaffold, 3 turns,
NQ questions, greedy by default (so that every column does the same work: sampled runs write
different numbers of tokens per episode from run to run; `--temperature 1` measures that too).
Measured side by side, per thread setting and batch:

- `run_episodes` as shipped (each episode's keys/values kept between turns), and with
  `keep_kv_mib = 0` (every turn re-encodes the whole episode), to show what keeping them buys;
- the ceiling: the same engine's plain batched generate of the same number of new tokens per
  sequence from the same prompts (`min_new_tokens`, so no row stops early), no searches (in a
  `keep_kv()` block too, so the shared system prompt is encoded once there as well);
- the same episodes run one at a time.

The second table splits each measurement into encoding the prompt/new context (the first forward
of each generate call) and decoding, which is where the gap to the ceiling comes from.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from common import peak_rss_mib, print_table

from searchplay.agent.rollout import chat_prompt_ids, run_episodes
from searchplay.assets import asset_file
from searchplay.assets.names import BUNDLED, model_path
from searchplay.config import RolloutConfig
from searchplay.game.prompts import solver_messages
from searchplay.jsonl import read_jsonl
from searchplay.llm.base import SamplingParams
from searchplay.llm.transformers_engine import TransformersEngine
from searchplay.search.bm25 import Bm25Retriever

STATS = ("generated_tokens", "prefill_tokens", "prefill_seconds")


def measured(engine: TransformersEngine, fn) -> dict[str, float]:
    """Run fn and return its seconds and the engine counters it moved."""
    before = {k: engine.stats[k] for k in STATS}
    t0 = time.perf_counter()
    fn()
    out = {k: engine.stats[k] - before[k] for k in STATS}
    out["seconds"] = time.perf_counter() - t0
    return out


def add(a: dict[str, float], b: dict[str, float]) -> dict[str, float]:
    return {k: a.get(k, 0.0) + b[k] for k in b}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1])
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--temperature", type=float, default=0.0)
    args = ap.parse_args()
    questions = [r["question"] for r in read_jsonl(asset_file("nq-answerable"))]
    retriever = Bm25Retriever(asset_file("wiki-bm25"))
    cfg = RolloutConfig(scaffold="guided", max_turns=3, max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=0)
    rows, split = [], []
    for threads in args.threads:
        engine = TransformersEngine.load(model_path(BUNDLED), "bfloat16", threads=threads)
        kept_bytes = engine.keep_kv_bytes
        episodes = lambda ps: run_episodes(engine, retriever, ps, cfg, "answer", 3)  # noqa: E731
        episodes([chat_prompt_ids(engine.tokenizer, *solver_messages(q)) for q in questions[:2]])  # warm-up
        for batch in args.batches:
            prompts = [chat_prompt_ids(engine.tokenizer, *solver_messages(q)) for q in questions[:batch]]
            kept = measured(engine, lambda: episodes(prompts))
            engine.keep_kv_bytes = 0
            re_encoded = measured(engine, lambda: episodes(prompts))
            engine.keep_kv_bytes = kept_bytes
            per_seq = max(1, int(kept["generated_tokens"]) // batch)

            def plain() -> None:
                with engine.keep_kv():
                    engine.generate(
                        prompts,
                        SamplingParams(temperature=args.temperature, max_new_tokens=per_seq, min_new_tokens=per_seq, seed=0),
                    )

            ceiling = measured(engine, plain)
            single: dict[str, float] = {}
            for p in prompts:
                single = add(single, measured(engine, lambda: episodes([p])))
            tps = {
                name: m["generated_tokens"] / m["seconds"]
                for name, m in (("kept", kept), ("re", re_encoded), ("ceiling", ceiling), ("single", single))
            }
            rows.append(
                {
                    "threads": threads,
                    "batch": batch,
                    "run_episodes tok/s": tps["kept"],
                    "re-encoding each turn tok/s": tps["re"],
                    "plain generate (ceiling) tok/s": tps["ceiling"],
                    "one at a time tok/s": tps["single"],
                    "vs ceiling": tps["kept"] / tps["ceiling"],
                    "vs one at a time": tps["kept"] / tps["single"],
                    "vs re-encoding": tps["kept"] / tps["re"],
                }
            )
            for name, m in (
                ("run_episodes", kept),
                ("re-encoding each turn", re_encoded),
                ("plain generate", ceiling),
                ("one at a time", single),
            ):
                decode_s = m["seconds"] - m["prefill_seconds"]
                split.append(
                    {
                        "threads": threads,
                        "batch": batch,
                        "measure": name,
                        "generated": int(m["generated_tokens"]),
                        "encoded (prefill) tokens": int(m["prefill_tokens"]),
                        "total s": m["seconds"],
                        "prefill s": m["prefill_seconds"],
                        "prefill tok/s": m["prefill_tokens"] / max(m["prefill_seconds"], 1e-9),
                        "decode + loop s": decode_s,
                        "decode tok/s": m["generated_tokens"] / decode_s,
                    }
                )
    title = (
        f"SmolLM2-135M bf16, bundled BM25 top-3, guided, 3 turns, <= {args.max_new_tokens} new tokens/turn, "
        f"temperature {args.temperature:g}"
    )
    print_table(f"Agent rollouts ({title})", rows)
    print_table("Where the time goes (prefill = first forward of each generate call)", split)
    print(f"\ntorch {torch.__version__}; peak RSS {peak_rss_mib():,.0f} MiB")


if __name__ == "__main__":
    main()
