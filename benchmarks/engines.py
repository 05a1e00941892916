"""Rollout engines side by side: our transformers engine vs vLLM (CPU build here), same episodes, with weight sync.

Run where vLLM is installed (make setup installs its CPU build on Linux x86-64):
    .venv/bin/python benchmarks/engines.py [--batches 8 16] [--max-new-tokens 32] [--device cuda]

The bundled SmolLM2-135M, bundled BM25 top 3, guided scaffold, 3 turns, NQ questions, greedy (so
both engines do the same work). Each engine as the trainer runs it: the transformers engine
generates with the learner's fp32 model under bf16 autocast (no copy, nothing to sync); vLLM
holds its own bf16 copy and is sent the learner's weights after each update
(`VLLMEngine.sync_weights`, timed here on the same fp32 model). "incl. sync" charges one sync per
rollout batch, as one training step does. vLLM's CPU build binds its compute threads itself
(VLLM_CPU_OMP_THREADS_BIND; on 2 cores it keeps one for its engine process by default).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from common import print_table

from searchplay.agent.rollout import chat_prompt_ids, run_episodes
from searchplay.config import RolloutConfig
from searchplay.game.prompts import solver_messages
from searchplay.jsonl import read_jsonl
from searchplay.llm.transformers_engine import TransformersEngine, load_model
from searchplay.llm.vllm_engine import VLLMEngine


def timed_episodes(engine, retriever, prompts, cfg) -> tuple[int, float]:
    t0 = time.perf_counter()
    trajs = run_episodes(engine, retriever, prompts, cfg, "answer", 3)
    return sum(t.generated_tokens for t in trajs), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[8, 16])
    ap.add_argument("--max-new-tokens", type=int, default=32)
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (benchmarks/gpu.sh)")
    args = ap.parse_args()
    # Imported here, not at the top: vLLM's processes re-import this file as __mp_main__, and bm25s
    # (under searchplay.assets and searchplay.search.bm25) imports numba when it is installed (it is,
    # with vLLM), whose llvmlite objects break the kernel scan vllm-cpu 0.32 runs over every loaded
    # module when a worker starts.
    from searchplay.assets import asset_file
    from searchplay.assets.names import BUNDLED, model_path
    from searchplay.search.bm25 import Bm25Retriever

    questions = [r["question"] for r in read_jsonl(asset_file("nq-answerable"))]
    retriever = Bm25Retriever(asset_file("wiki-bm25"))
    cfg = RolloutConfig(scaffold="guided", max_turns=3, max_new_tokens=args.max_new_tokens, temperature=0.0, seed=0)
    model_dir = str(model_path(BUNDLED))
    policy, tokenizer = load_model(model_dir, "float32", args.device)  # the learner's copy
    hf = TransformersEngine(policy, tokenizer, threads=2, autocast_bf16=True)
    t0 = time.perf_counter()
    vllm = VLLMEngine(model_dir, "bfloat16", args.device)
    start_s = time.perf_counter() - t0
    syncs = [vllm.sync_weights(policy)["timing/weight_sync_s"] for _ in range(3)]
    sync_s = sorted(syncs)[1]
    warm = [chat_prompt_ids(tokenizer, *solver_messages(q)) for q in questions[:2]]
    for engine in (hf, vllm):
        timed_episodes(engine, retriever, warm, cfg)
    rows = []
    for batch in args.batches:
        prompts = [chat_prompt_ids(tokenizer, *solver_messages(q)) for q in questions[:batch]]
        hf_tokens, hf_s = timed_episodes(hf, retriever, prompts, cfg)
        v_tokens, v_s = timed_episodes(vllm, retriever, prompts, cfg)
        for name, tokens, seconds, sync in (
            ("transformers", hf_tokens, hf_s, 0.0),
            (f"vLLM ({args.device})", v_tokens, v_s, sync_s),
        ):
            rows.append(
                {
                    "batch": batch,
                    "engine": name,
                    "generated tokens": tokens,
                    "episodes s": f"{seconds:.1f}",
                    "tok/s": f"{tokens / seconds:.1f}",
                    "weight sync s": f"{sync:.2f}",
                    "tok/s incl. sync": f"{tokens / (seconds + sync):.1f}",
                    "vs transformers": f"{(tokens / (seconds + sync)) / (hf_tokens / hf_s):.2f}x",
                }
            )
    print_table(f"Rollout engines (SmolLM2-135M, guided, 3 turns, <= {args.max_new_tokens} new tokens/turn, greedy)", rows)
    bind = os.environ.get("VLLM_CPU_OMP_THREADS_BIND", "auto")
    mib = sum(p.numel() for p in policy.parameters()) * 2 / 2**20
    print(f"\nvLLM start {start_s:.0f} s; weight sync ({mib:.0f} MiB in bf16) median of 3: {sync_s:.2f} s")
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"VLLM_CPU_OMP_THREADS_BIND={bind}"
    print(f"{where}; torch {torch.__version__}")


if __name__ == "__main__":  # vLLM starts its engine in a spawned process
    main()
