"""Weights between two processes on one GPU by CUDA IPC, in the buckets of llm/weight_buckets.py: GB/s.

    python3 benchmarks/gpu_ipc.py [--gb 15] [--bucket-mib 256]

What the `ipc` weight sync route does on a GPU shared by a learner rank and a rollout engine: the sender
fills a bf16 bucket on the GPU and passes its CUDA IPC handle (`share_cuda`); the receiver, another process,
maps it (`open_cuda`) and copies it into memory of its own, as vLLM's in-place reload does; the sender reuses
its buffer only after the receiver's answer. --gb of bf16 in all (15: Qwen2.5-7B's weights). Prints the time
and GB/s with the bucket count; used by benchmarks/gpu_check.sh (needs a CUDA device).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import torch
import torch.multiprocessing as mp
from common import print_table

from searchplay.llm.weight_buckets import open_cuda, share_cuda


def receiver(handles: mp.Queue, answers: mp.Queue) -> None:
    """Map each bucket, copy it into this process's memory and answer with its checksum (the copy is done)."""
    while (handle := handles.get()) is not None:
        flat = open_cuda(handle)
        own = flat.clone()
        answers.put(float(own[:4096].float().sum()))
        del flat, own


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gb", type=float, default=15.0)
    ap.add_argument("--bucket-mib", type=int, default=256)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("gpu_ipc.py needs a CUDA device")
    ctx = mp.get_context("spawn")
    handles, answers = ctx.Queue(), ctx.Queue()
    child = ctx.Process(target=receiver, args=(handles, answers))
    child.start()
    numel = args.bucket_mib * 2**20 // 2
    count = max(1, round(args.gb * 1e9 / (numel * 2)))
    buffers = [torch.randn(numel, dtype=torch.bfloat16, device="cuda") for _ in range(2)]  # filled once, reused
    sums = [float(b[:4096].float().sum()) for b in buffers]
    handles.put(share_cuda(buffers[0]))  # warm-up: the receiver's CUDA context and first mapping
    assert abs(answers.get(timeout=300) - sums[0]) < 1e-3 * max(1.0, abs(sums[0]))
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for k in range(count):
        handles.put(share_cuda(buffers[k % 2]))
        got = answers.get(timeout=300)
        assert abs(got - sums[k % 2]) < 1e-3 * max(1.0, abs(sums[k % 2])), "the receiver read other memory"
    seconds = time.perf_counter() - t0
    handles.put(None)
    child.join(timeout=60)
    moved = count * numel * 2
    rows = [{"buckets": count, "bucket MiB": args.bucket_mib, "GB moved": f"{moved / 1e9:.1f}", "seconds": f"{seconds:.2f}",
             "GB/s": f"{moved / 1e9 / seconds:.1f}"}]  # fmt: skip
    print_table(f"CUDA IPC between two processes on {torch.cuda.get_device_name()}", rows)


if __name__ == "__main__":
    main()
