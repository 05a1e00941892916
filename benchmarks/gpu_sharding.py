"""The sharded learner (FSDP2, rl/sharding.py) on one GPU: equal to one process, and its memory beside the plan.

    python3 benchmarks/gpu_sharding.py equal --model DIR [--device cuda]
    python3 benchmarks/gpu_sharding.py memory --config CONFIG.json [--train-config configs/paper-qwen2.5-7b.toml] [--ranks 8]

`equal`: one `Learner.update` of the tiny model with `learner.sharding = "fsdp2"` in a group of one rank
(NCCL for the GPU's tensors, gloo for the CPU's, as the Ray learner group is made) against the same update
unsharded on the CPU, fp32 both, KL and clipping on: the largest weight difference and the loss of each.
`memory`: a model of CONFIG's shape (random weights) sharded as rank 0 of `--ranks` under torch's fake
process group (collectives move no data, allocations are real), with the learner settings of
`--train-config` (the paper config's: gradient checkpointing, bf16 autocast, a sharded reference for its KL,
12,288 tokens per micro-batch), one update of two full micro-batches; the rank's peak beside what the memory
plan (train/memory_plan.py) puts on that GPU for the learner in its update phase. Used by
benchmarks/gpu_check.sh; both also run on a CPU (the plan comparison then has no peak to compare).
"""

from __future__ import annotations

import argparse
import json
import random
import socket
import sys
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
import torch.distributed as dist
from common import print_table
from torch.testing._internal.distributed.fake_pg import FakeStore
from transformers import AutoConfig, AutoModelForCausalLM

from searchplay.config import LearnerConfig, load_config
from searchplay.llm.device import bind_cuda
from searchplay.llm.transformers_engine import load_model
from searchplay.rl.data_parallel import group_backend
from searchplay.rl.learner import Learner, Sample
from searchplay.train.memory_plan import make_plan, read_shape


def samples(lengths: list[int], response: int, vocab: int, seed: int = 0) -> list[Sample]:
    """Random samples of the given total lengths, the last `response` tokens trained."""
    rng = random.Random(seed)
    return [
        Sample([rng.randrange(3, vocab) for _ in range(n - response)], [rng.randrange(3, vocab) for _ in range(response)],
               [1] * response, rng.uniform(-1, 1))
        for n in lengths
    ]  # fmt: skip


def updated(model_dir: str, device: str, sharding: str, batch: list[Sample]) -> tuple[dict[str, torch.Tensor], float]:
    """Weights (on the CPU, gathered when sharded) and loss after one update from the model in `model_dir`."""
    torch.manual_seed(0)
    model, _ = load_model(model_dir, "float32", device)
    reference, _ = load_model(model_dir, "float32", device)
    cfg = LearnerConfig(lr=1e-3, kl_coef=0.05, bf16=False, sharding=sharding, micro_batch_tokens=256)
    learner = Learner(model, cfg, reference, total_steps=10)
    loss = learner.update(batch)["learner/loss"]
    full = learner.full_weights()
    weights = full if full is not None else {n: t.detach().cpu() for n, t in model.state_dict().items()}
    return weights, loss


def equal(args: argparse.Namespace) -> None:
    batch = samples([36] * 6, 12, 200)
    one, one_loss = updated(args.model, "cpu", "none", batch)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    device = bind_cuda(torch.device(args.device))
    dist.init_process_group(group_backend(device.type), init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    sharded, sharded_loss = updated(args.model, str(device), "fsdp2", batch)
    dist.destroy_process_group()
    diff = max(float((sharded[n].float() - one[n]).abs().max()) for n in one)
    rows = [{"learner": "one process, CPU", "loss": f"{one_loss:.6f}", "max weight difference": "-"},
            {"learner": f"FSDP2, one rank, {args.device} ({group_backend(device.type)})", "loss": f"{sharded_loss:.6f}",
             "max weight difference": f"{diff:.2e}"}]  # fmt: skip
    print_table("One update of the tiny model, fp32, KL and clipping on", rows)


def memory(args: argparse.Namespace) -> None:
    cuda = torch.cuda.is_available()
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=args.ranks)
    fields = json.loads(Path(args.config).read_text())
    config = AutoConfig.for_model(fields.pop("model_type"), **fields)
    run = load_config(
        args.train_config, ["trainer.backend=ray", f"trainer.learner_workers={args.ranks}", "model.engine=transformers"]
    )
    cfg = replace(run.learner, sharding="fsdp2")
    torch.manual_seed(0)
    with torch.device("cuda" if cuda else "cpu"):  # whole models first; sharding keeps 1/ranks of each
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        reference = AutoModelForCausalLM.from_config(config, dtype=torch.float32) if cfg.kl_coef > 0 else None
    learner = Learner(model, cfg, reference, total_steps=10)
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    # two full micro-batches on rank 0: 2 x ranks samples of one micro-batch each, lengths all different so that
    # the fake group (whose gathers return this rank's rows only) gives rank 0 the same share in every pass
    lengths = [cfg.micro_batch_tokens - k for k in range(2 * args.ranks)]
    stats = learner.update(samples(lengths, 256, min(config.vocab_size, 40000)))
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    load = make_plan(run, read_shape(Path(args.config)), 2 * args.ranks, 80).loads[0]
    planned = sum(gib for role, _, gib in load.update if role == "learner")
    device = torch.cuda.get_device_name() if cuda else "cpu"
    rows = [{"shape": Path(args.config).name, "learner settings": Path(args.train_config).name, "ranks (fake group)": args.ranks,
             "micro-batch tokens": cfg.micro_batch_tokens, "trained tokens": int(stats.get("learner/trained_tokens", 0)),
             "rank 0 peak GiB": f"{peak:.1f}", "plan GiB (learner, update)": f"{planned:.1f}"}]  # fmt: skip
    print_table(f"A sharded learner's update, rank 0 of {args.ranks}, on {device}", rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    e = sub.add_parser("equal", help="FSDP2 on one rank against one process")
    e.add_argument("--model", required=True, help="a model directory (the tiny test model)")
    e.add_argument("--device", default="cuda")
    m = sub.add_parser("memory", help="a rank's peak under a fake group, beside the plan")
    m.add_argument("--config", required=True, help="a model config.json (configs/shapes/qwen2.5-7b-instruct.json)")
    m.add_argument("--train-config", default="configs/paper-qwen2.5-7b.toml", help="the learner settings (a searchplay config)")
    m.add_argument("--ranks", type=int, default=8)
    args = ap.parse_args()
    equal(args) if args.command == "equal" else memory(args)


if __name__ == "__main__":
    main()
