"""Per-GPU throughput of a model shape: rollout tokens/s and learner tokens/s, peak memory.

    python3 benchmarks/gpu_throughput.py --config CONFIG.json --tokenizer DIR [--device cuda] [--gradient-checkpointing]
        [--lora-rank R] [--micro-batch-tokens N] [--batches 64 256 | --batches]

Used by benchmarks/gpu_check.sh, where real weights cannot travel (the device machine takes a
64 MiB working tree): the model is built from a config.json (SmolLM2-135M's; Qwen2.5-1.5B's in
benchmarks/configs/) with random weights (seed 0), which costs the same arithmetic as trained
weights. Token ids are random below 40,000, so any tokenizer serves for the end-of-turn ids. Rollouts: the transformers engine
as the trainer runs it (fp32 weights, bf16 autocast), batches of 64 and 256 prompts of 256
tokens, exactly 128 new tokens each (min_new_tokens = max_new_tokens), sampled at T = 1. Learner:
one `Learner.update` (bf16 autocast, KL off, one mini-batch) on 64 sequences of 1024 tokens whose
last 256 are trained; tokens/s counts every token of the forward and backward. One warm-up, then
the median of 3. These figures feed docs/scaling.md. Beside the learner's measured peak it prints the
memory plan's update phase for the same settings (`searchplay plan`'s estimate, train/memory_plan.py);
`--lora-rank` trains LoRA adapters over the frozen base (the extra `lora`); `--batches` with no value
skips the rollouts (a 7B model's learner alone).
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

from searchplay.config import Config, LearnerConfig
from searchplay.llm.base import SamplingParams
from searchplay.llm.transformers_engine import TransformersEngine
from searchplay.rl.learner import Learner, Sample
from searchplay.train.memory_plan import make_plan, read_shape


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
    ap.add_argument("--batches", type=int, nargs="*", default=[64, 256], help="rollout batch sizes (none: no rollouts)")
    ap.add_argument("--lora-rank", type=int, default=0, help="train LoRA adapters of this rank (0: full fine-tuning)")
    ap.add_argument("--micro-batch-tokens", type=int, default=16384)
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
    learner_cfg = LearnerConfig(
        lr=1e-6,
        kl_coef=0.0,
        bf16=True,
        micro_batch_tokens=args.micro_batch_tokens,
        gradient_checkpointing=args.gradient_checkpointing,
        lora_rank=args.lora_rank,
    )
    if args.lora_rank:
        from searchplay.rl.lora import add_adapters  # the optional extra 'lora'

        model = add_adapters(model, args.lora_rank, 32)
    learner = Learner(model, learner_cfg, pad_id=engine.pad_id)
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
    plan_cfg = Config()
    plan_cfg.learner, plan_cfg.model.engine = learner_cfg, "transformers"
    planned = sum(gib for *_, gib in make_plan(plan_cfg, read_shape(Path(args.config)), 1, 80).loads[0].update)
    work = f"learner update{f' (LoRA r{args.lora_rank})' if args.lora_rank else ''}, 64 x 1024 tokens (256 trained)"
    rows.append({"work": work, "seconds": f"{seconds:.2f}", "tokens/s": f"{64 * 1024 / seconds:.0f} forward+backward",
                 "peak GiB": f"{peak:.1f} (plan {planned:.1f})"})  # fmt: skip
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    print_table(f"{params / 1e9:.2f}B-parameter {config.model_type} model (random weights) on {device}", rows)


if __name__ == "__main__":
    main()
