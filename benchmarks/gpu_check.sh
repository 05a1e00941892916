#!/usr/bin/env bash
# The GPU check that fits a device machine with no network and a 64 MiB working tree (the
# `device` tool of this workplace): no vLLM (its wheel alone is larger) and no SmolLM2 weights.
#
#   bash benchmarks/gpu_check.sh prepare   here, with network: builds .whl/ and .gpuassets/ (ignored by git,
#                                          carried to the device) and checks the sizes against the limits
#   bash benchmarks/gpu_check.sh           on the device: every part below, each in turn even when one fails
#
# Parts (their output in $OUT/parts.log, default OUT=gpu-out; a table of all at the end, $OUT/parts.md; at most 8
# files in $OUT, as the device tool returns no more):
#   gpu-tests   the gpu-marked tests (CUDA gives the CPU's greedy tokens and update loss; a weight bucket opens by
#               CUDA IPC in another process; a Ray learner binds its GPU with an explicit index);
#   tiny-cuda, tiny-cpu   3 self-play steps of the tiny config on the GPU and on the CPU of the same machine;
#   throughput  rollout and learner throughput of SmolLM2-135M- and Qwen2.5-1.5B-shaped models with random weights
#               (benchmarks/gpu_throughput.py), the per-GPU figures of docs/scaling.md, and a Qwen2.5-7B-shaped
#               learner update with LoRA rank 64 (the one-GPU layout) beside the memory plan's peak;
#   sharding    FSDP2 on one NCCL rank against one CPU process, rank 0's peak for a Qwen2.5-7B shape under a fake
#               group of 8 beside the memory plan (benchmarks/gpu_sharding.py);
#   ipc         15 GB of bf16 between two processes by CUDA IPC (benchmarks/gpu_ipc.py).
# It uses the machine's own torch (CUDA build) and the packages its image holds (transformers, peft, numpy, ...);
# .whl/ brings the rest of searchplay's imports, .gpuassets/ a SEARCHPLAY_HOME with the corpus, its BM25 index, the
# seeds, nq-answerable and the tiny model's config and tokenizer (its random weights are made there, seeded).
set -uo pipefail
cd "$(dirname "$0")/.."

WHEELS=(bm25s PyStemmer fastapi starlette uvicorn httptools orjson tomli-w pydantic pydantic-core annotated-types
        typing-inspection mwparserfromhell pyahocorasick)
ASSETS=(wiki wiki-bm25 wiki-seeds nq-answerable)
DEVICE_LIMIT=$((64 * 1024 * 1024))  # what travels: tracked tree plus carried paths
BUNDLE_LIMIT=$((40 * 1024 * 1024))  # .whl/ and .gpuassets/ together (paper scale v2)

if [ "${1:-}" = prepare ]; then
  set -e
  for d in .whl .gpuassets; do
    if [ -e "$d" ] && [ ! -f "$d/PREPARED" ]; then
      echo "$d exists and was not made by this script (no $d/PREPARED); move it aside first" >&2; exit 1
    fi
    rm -rf "$d"; mkdir "$d"; echo "made by benchmarks/gpu_check.sh prepare" > "$d/PREPARED"
  done
  pins=()
  for w in "${WHEELS[@]}"; do pins+=("$w==$(.venv/bin/python -c "import importlib.metadata as m; print(m.version('$w'))")"); done
  .venv/bin/pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 -d .whl "${pins[@]}"
  home=$(.venv/bin/python -c "from searchplay.config import searchplay_home; print(searchplay_home())")
  for a in "${ASSETS[@]}"; do cp -r "$home/$a" .gpuassets/; done
  mkdir .gpuassets/tiny-random-llama
  cp "$home"/tiny-random-llama/*.json "$home"/tiny-random-llama/*.jinja .gpuassets/tiny-random-llama/
  cp "$home/smollm2-135m-instruct/hf/config.json" .gpuassets/smollm2-config.json
  .venv/bin/python - "$DEVICE_LIMIT" "$BUNDLE_LIMIT" <<'PY'
import subprocess, sys
from pathlib import Path
device, bundle_limit = map(int, sys.argv[1:])
tracked = sum(Path(f).stat().st_size for f in subprocess.run(["git", "ls-files"], capture_output=True, text=True).stdout.split())
bundle = sum(p.stat().st_size for d in (".whl", ".gpuassets") for p in Path(d).rglob("*") if p.is_file())
mib = lambda n: f"{n / 2**20:.1f}"
print(f"| what | MiB | limit MiB |\n| --- | --- | --- |\n| tracked tree | {mib(tracked)} | |")
print(f"| .whl/ + .gpuassets/ | {mib(bundle)} | {mib(bundle_limit)} |\n| all that travels | {mib(tracked + bundle)} | {mib(device)} |")
sys.exit(0 if bundle <= bundle_limit and tracked + bundle <= device else "over a limit")
PY
  exit 0
fi

OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD SEARCHPLAY_HOME=$PWD/.gpuassets OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
TINY=.gpuassets/tiny-random-llama
[ -f "$TINY/model.safetensors" ] || python3 -c "
import torch
from transformers import AutoConfig, LlamaForCausalLM
torch.manual_seed(0)  # as searchplay/assets/tiny.py builds it
LlamaForCausalLM(AutoConfig.from_pretrained('$TINY')).save_pretrained('$TINY')"

ROWS=()
part() {  # part NAME COMMAND...: run it, log it, record its exit status and seconds; never stop the script
  local name=$1; shift
  local t0=$SECONDS
  echo "== $name" | tee -a "$OUT/parts.log" >&2
  "$@" > "/tmp/part-$name.log" 2>&1
  local rc=$?
  cat "/tmp/part-$name.log" >> "$OUT/parts.log"
  tail -5 "/tmp/part-$name.log" >&2
  ROWS+=("| $name | $([ $rc -eq 0 ] && echo passed || echo "FAILED (exit $rc)") | $((SECONDS - t0)) |")
}

tiny_steps() {
  rm -rf "/tmp/tiny-$1"
  python3 -m searchplay train -c configs/tiny-test.toml --run-dir "/tmp/tiny-$1" --steps 3 \
    --set model.device="$1" --set trainer.eval_every=3 && cp "/tmp/tiny-$1/metrics.jsonl" "$OUT/tiny-$1.jsonl"
}

throughput() {
  python3 benchmarks/gpu_throughput.py --config .gpuassets/smollm2-config.json --tokenizer "$TINY" &&
  python3 benchmarks/gpu_throughput.py --config benchmarks/configs/qwen2.5-1.5b.json --tokenizer "$TINY" \
    --batches 64 --gradient-checkpointing &&
  python3 benchmarks/gpu_throughput.py --config configs/shapes/qwen2.5-7b-instruct.json --tokenizer "$TINY" \
    --batches --gradient-checkpointing --lora-rank 64 --micro-batch-tokens 12288
}

sharding() {
  python3 benchmarks/gpu_sharding.py equal --model "$TINY" --device cuda &&
  python3 benchmarks/gpu_sharding.py memory --config configs/shapes/qwen2.5-7b-instruct.json --ranks 8
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())"
  nproc; } | tee "$OUT/device.txt"

part gpu-tests python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_device.py tests/test_weight_buckets.py
part tiny-cuda tiny_steps cuda
part tiny-cpu tiny_steps cpu
part throughput throughput
part sharding sharding
part ipc python3 benchmarks/gpu_ipc.py --gb 15

python3 - "$OUT" <<'PY' > "$OUT/summary.md"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
keys = ["timing/step_s", "timing/update_s", "solver_update/logprob_gap_max", "eval/em", "solver/acc", "learner/lr"]
print("| device | step | " + " | ".join(keys) + " |")
print("|" + " --- |" * (len(keys) + 2))
for dev in ("cuda", "cpu"):
    path = out / f"tiny-{dev}.jsonl"
    for line in path.read_text().splitlines() if path.is_file() else []:
        m = json.loads(line)
        print(f"| {dev} | {m['step']} | " + " | ".join(f"{m[k]:.3g}" if k in m else "-" for k in keys) + " |")
PY
{ printf '| part | result | seconds |\n| --- | --- | --- |\n'; printf '%s\n' "${ROWS[@]}"; } | tee "$OUT/parts.md"
cat "$OUT/summary.md"
