#!/usr/bin/env bash
# The GPU check that fits a device machine with no network and a 64 MiB working tree (the
# `device` tool of this workplace): no vLLM (its wheel alone is larger) and no SmolLM2 weights.
#   1. the gpu-marked tests (CUDA gives the CPU's greedy tokens and update loss; a weight bucket opens by CUDA IPC in another process);
#   2. 3 self-play steps of the tiny config on the GPU and on the CPU of the same machine;
#   3. rollout and learner throughput of SmolLM2-135M- and Qwen2.5-1.5B-shaped models with random
#      weights (benchmarks/gpu_throughput.py), the per-GPU figures of docs/scaling.md;
#   4. a Qwen2.5-7B-shaped learner update with LoRA rank 64 (the one-GPU layout; peft in .whl/), its peak
#      beside the memory plan's (prepared 2026-12-01, not yet run).
#   5. the sharded learner (benchmarks/gpu_sharding.py): FSDP2 on one NCCL rank against one CPU process, and
#      rank 0's peak for a Qwen2.5-7B-shaped model under a fake group of 8 with the paper config's learner,
#      beside the memory plan's; then 15 GB of bf16 between two processes by CUDA IPC (benchmarks/gpu_ipc.py)
#      (prepared 2026-12-01, not yet run).
# It uses the machine's own torch (CUDA build). What it needs beside the checkout, prepared on a
# machine with network (benchmarks/README.md, "GPU check"):
#   .whl/          wheels of searchplay's dependencies that the machine lacks (cp312, manylinux)
#   .gpuassets/    SEARCHPLAY_HOME with the tiny model, wiki, wiki-bm25, wiki-seeds, nq-answerable,
#                  and smollm2-config.json (SmolLM2-135M's config.json)
# Results in $OUT (default gpu-out/): device.txt, gpu-tests.log, tiny-*.jsonl, throughput.md, sharding.md, summary.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD SEARCHPLAY_HOME=$PWD/.gpuassets OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())"
  nproc; } | tee "$OUT/device.txt"

python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_device.py tests/test_weight_buckets.py 2>&1 | tee "$OUT/gpu-tests.log"

for dev in cuda cpu; do
  rm -rf "/tmp/tiny-$dev"
  python3 -m searchplay train -c configs/tiny-test.toml --run-dir "/tmp/tiny-$dev" --steps 3 \
    --set model.device=$dev --set trainer.eval_every=3 > "/tmp/train-$dev.log" 2>&1 || { tail -40 "/tmp/train-$dev.log"; exit 1; }
  tail -1 "/tmp/train-$dev.log"
  cp "/tmp/tiny-$dev/metrics.jsonl" "$OUT/tiny-$dev.jsonl"
done

{ python3 benchmarks/gpu_throughput.py --config .gpuassets/smollm2-config.json --tokenizer .gpuassets/tiny-random-llama
  python3 benchmarks/gpu_throughput.py --config benchmarks/configs/qwen2.5-1.5b.json --tokenizer .gpuassets/tiny-random-llama \
    --batches 64 --gradient-checkpointing
  python3 benchmarks/gpu_throughput.py --config configs/shapes/qwen2.5-7b-instruct.json --tokenizer .gpuassets/tiny-random-llama \
    --batches --gradient-checkpointing --lora-rank 64 --micro-batch-tokens 12288; } | tee "$OUT/throughput.md"

{ python3 benchmarks/gpu_sharding.py equal --model .gpuassets/tiny-random-llama --device cuda
  python3 benchmarks/gpu_sharding.py memory --config configs/shapes/qwen2.5-7b-instruct.json --ranks 8
  python3 benchmarks/gpu_ipc.py --gb 15; } | tee "$OUT/sharding.md"

python3 - "$OUT" <<'PY' | tee "$OUT/summary.md"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
keys = ["timing/step_s", "timing/update_s", "solver_update/logprob_gap_max", "eval/em", "solver/acc", "learner/lr"]
print("| device | step | " + " | ".join(keys) + " |")
print("|" + " --- |" * (len(keys) + 2))
for dev in ("cuda", "cpu"):
    for line in (out / f"tiny-{dev}.jsonl").read_text().splitlines():
        m = json.loads(line)
        print(f"| {dev} | {m['step']} | " + " | ".join(f"{m[k]:.3g}" if k in m else "-" for k in keys) + " |")
PY
