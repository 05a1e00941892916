"""Per-GPU throughput of a model shape: rollout tokens/s and learner tokens/s, peak memory.

    python3 benchmarks/gpu_throughput.py --config CONFIG.json --tokenizer DIR [--device cuda] [--gradient-checkpointing]

Used by benchmarks/gpu_check.sh, where real weights cannot travel (the device machine takes a
64 MiB working tree): the model is built from a config.json (SmolLM2-135M's; Qwen2.5-1.5B's in
benchmarks/configs/) with random weights (seed 0), which costs the same arithmetic as trained
weights. Token ids are random below 40,000, so any tokenizer serves for the end-of-turn ids. Rollouts: the transformers engine
as the trainer runs it (fp32 weights, bf16 autocast), batches of 64 and 256 prompts of 256
tokens, exactly 128 new tokens each (min_new_tokens = max_new_tokens), sampled at T = 1. Learner:
one `Learner.update` (bf16 autocast, KL off, one mini-batch) on 64 sequences of 1024 tokens whose
last 256 are trained; tokens/s counts every token of the forward and backward. One warm-up, then
the median of 3. These figures feed docs/scaling.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
from common import print_table
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

from searchplay.config import LearnerConfig
from searchplay.llm.base import SamplingParams
from searchplay.llm.transformers_engine import TransformersEngine
from searchplay.rl.learner import Learner, Sample


def median_of(fn, repeats: int = 3) -> float:
    fn()
    times = []
    for _ in range(repeats):
        torch.cuda.synchronize() if torch.cuda.is_available() else None
        t0 = time.perf_counter()
        fn()
        torch.cuda.synchronize() if torch.cuda.is_available() else None
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="a model config.json (SmolLM2-135M's)")
    ap.add_argument("--tokenizer", required=True, help="a tokenizer directory with the same vocabulary")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256], help="rollout batch sizes")
    args = ap.parse_args()
    torch.manual_seed(0)
    fields = json.loads(Path(args.config).read_text())
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    with torch.device(args.device):  # random weights made where they will live (a 1.5B model in seconds)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {params / 1e6:.0f}M parameters (random weights), device {args.device}")
    engine = TransformersEngine(model, tokenizer, autocast_bf16=True)
    rows = []
    for batch in args.batches:
        prompts = [[int(x) for x in torch.randint(100, 40000, (256,))] for _ in range(batch)]
        sp = SamplingParams(temperature=1.0, max_new_tokens=128, min_new_tokens=128, seed=0)
        torch.cuda.reset_peak_memory_stats() if torch.cuda.is_available() else None
        seconds = median_of(lambda p=prompts, s=sp: engine.generate(p, s))
        peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
        rows.append({"work": f"rollout, batch {batch} x (256 + 128)", "seconds": f"{seconds:.2f}",
                     "tokens/s": f"{batch * 128 / seconds:.0f} generated", "peak GiB": f"{peak:.1f}"})  # fmt: skip
    learner = Learner(
        model,
        LearnerConfig(
            lr=1e-6, kl_coef=0.0, bf16=True, micro_batch_tokens=16384, gradient_checkpointing=args.gradient_checkpointing
        ),
        pad_id=engine.pad_id,
    )
    samples = [
        Sample(
            [int(x) for x in torch.randint(100, 40000, (768,))],
            [int(x) for x in torch.randint(100, 40000, (256,))],
            [1] * 256,
            0.5,
        )
        for _ in range(64)
    ]
    torch.cuda.reset_peak_memory_stats() if torch.cuda.is_available() else None
    # each update is one step of a run: samples from the current weights (the version the learner checks)
    seconds = median_of(lambda: learner.update([replace(s, version=learner.version) for s in samples]))
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else float("nan")
    rows.append({"work": "learner update, 64 x 1024 tokens (256 trained)", "seconds": f"{seconds:.2f}",
                 "tokens/s": f"{64 * 1024 / seconds:.0f} forward+backward", "peak GiB": f"{peak:.1f}"})  # fmt: skip
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print_table(f"{params / 1e9:.2f}B-parameter {config.model_type} model (random weights) on {device}", rows)


if __name__ == "__main__":
    main()
