"""float32 vs bfloat16 (and vLLM vs our engine) on the CPU this runs on, side by side in one run.

    .venv/bin/python benchmarks/cpu_speed.py [--no-bf16] [--parts matmul,encoder,ask,eval,step]

Prints the CPU (model name, the flags that matter, what `auto` resolves to), then one table per
part, each row one setting, and what `auto` picked:
- matmul:  one 1376x576 @ 576x1536 product (SmolLM2-135M's MLP shape at 1376 tokens), GFLOP/s;
- encoder: the dense encoder (all-MiniLM-L6-v2) over 512 bundled passages, passages/s;
- ask:     `searchplay ask "What is the capital of France?"` with the demo config, the episode's
           seconds and the command's wall time (model and retriever loading, vLLM's start);
- eval:    `searchplay eval` on the first 32 nq-answerable questions, questions/min and wall time;
- step:    one demo training step (`searchplay train -c configs/cpu-smollm2.toml --steps 1`, no
           evaluation): proposer, verification and solver rollouts, update and weight sync.
Each CLI row runs in its own process; a row that passes `--limit-s` is stopped and shown as such.

`--no-bf16` re-runs this script with oneDNN capped at AVX2 and torch's kernels at AVX2
(ONEDNN_MAX_CPU_ISA=AVX2, ATEN_CPU_CAPABILITY=avx2): on a CPU with AMX this emulates one without
bf16 instructions for torch. It is not a real AVX2 machine: emulated bf16 products run slower than
on AMD Zen 1 (2 vs 10 GFLOP/s), float32 keeps this CPU's caches and clock, and vLLM's own kernels
still use AVX-512. Tables from such a run say "emulated".
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common  # noqa: F401  (sets OMP_WAIT_POLICY before torch loads)
import torch

from searchplay.precision import cpu_flags, cpu_model, native_bf16

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "searchplay"]
DEMO = "configs/cpu-smollm2.toml"
NO_BF16_ENV = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
SHOWN_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")
# (engine, dtype) rows of the CLI parts; "auto" is the default config, what a user gets
SETTINGS = [
    ("transformers", "float32"),
    ("transformers", "bfloat16"),
    ("vllm", "float32"),
    ("vllm", "bfloat16"),
    ("auto", "auto"),
]


def machine() -> dict[str, Any]:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = cpu_flags(text)
    native, why = native_bf16("cpu")
    return {
        "cpu": cpu_model(text),
        "cores": os.cpu_count(),
        "flags": " ".join(f for f in SHOWN_FLAGS if f in flags) or "(none of " + ", ".join(SHOWN_FLAGS) + ")",
        "torch": f"{torch.__version__}, kernels {torch.backends.cpu.get_cpu_capability()}",
        "emulated": ", ".join(f"{k}={os.environ[k]}" for k in NO_BF16_ENV if k in os.environ) or "no",
        "auto": f"{'bfloat16' if native else 'float32'} ({why})",
    }


def bench_matmul() -> list[dict[str, Any]]:
    a, b = torch.randn(1376, 576), torch.randn(576, 1536)
    flop = 2 * 1376 * 576 * 1536
    rows = []
    for name, x, y, autocast in [
        ("float32", a, b, False),
        ("bfloat16", a.bfloat16(), b.bfloat16(), False),
        ("float32 under bf16 autocast", a, b, True),
    ]:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            for _ in range(2):
                x @ y
            n, t0 = 0, time.perf_counter()
            while time.perf_counter() - t0 < 2.0:
                x @ y
                n += 1
        rows.append({"setting": name, "GFLOP/s": flop * n / (time.perf_counter() - t0) / 1e9})
    base = rows[0]["GFLOP/s"]
    for r in rows:
        r["vs float32"] = f"{r['GFLOP/s'] / base:.2f}x"
    return rows


def bench_encoder() -> list[dict[str, Any]]:
    import numpy as np

    from searchplay.assets import asset_file
    from searchplay.config import Config
    from searchplay.search.corpus import passages_at, scan_offsets
    from searchplay.search.dense import Encoder, passage_input

    corpus = asset_file("wiki", Config())
    offsets = scan_offsets(corpus)[:512]
    with open(corpus, "rb") as handle:
        texts = [passage_input(p.title, p.text, "") for p in passages_at(handle, offsets)]
    rows, reference = [], None
    for dtype, batch in [("float32", 64), ("float32", 16), ("bfloat16", 16), ("auto", 16)]:
        encoder = Encoder(None, threads=0, dtype=dtype)
        encoder.encode(texts[:32], True, batch)
        t0 = time.perf_counter()
        emb = encoder.encode(texts, True, batch)
        seconds = time.perf_counter() - t0
        reference = emb if reference is None else reference
        cosine = float(np.min(np.sum(emb * reference, axis=1)))
        label = f"auto -> {encoder.dtype}" if dtype == "auto" else dtype
        speed = len(texts) / seconds
        rows.append({"setting": f"{label}, batch {batch}", "passages/s": speed, "min cosine to float32": f"{cosine:.5f}"})
    for r in rows:
        r["vs float32 batch 64"] = f"{r['passages/s'] / rows[0]['passages/s']:.2f}x"
    return rows


def _run(cmd: list[str], limit_s: float) -> tuple[subprocess.CompletedProcess[str] | None, float, str]:
    """(finished process or None, wall seconds, why there is no result): a row that runs past `limit_s` or fails
    (vLLM's CPU build in bf16 under the AVX2 cap dies) is reported as such and the table goes on."""
    t0 = time.perf_counter()
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=limit_s)
    except subprocess.TimeoutExpired:
        return None, time.perf_counter() - t0, f"> {limit_s:.0f} s (stopped)"
    if out.returncode != 0:
        lines = [line.strip() for line in out.stderr.splitlines() if line.strip()]
        print(f"{shlex.join(cmd)} failed (exit {out.returncode}):\n{out.stderr[-3000:]}", file=sys.stderr)
        return None, time.perf_counter() - t0, f"failed (exit {out.returncode}: {lines[-1][:120] if lines else ''})"
    return out, time.perf_counter() - t0, ""


def _sets(engine: str, dtype: str) -> list[str]:
    return ["--set", f"model.engine={engine}", "--set", f"model.dtype={dtype}"]


def _picked(stderr: str) -> str:
    notes = [line.split(":")[0] for line in stderr.splitlines() if line.startswith(("model.engine = ", "model.dtype = "))]
    return ", ".join(n.split(" = ")[1] for n in notes)


def bench_ask(limit_s: float) -> list[dict[str, Any]]:
    rows = []
    for engine, dtype in SETTINGS:
        cmd = [*CLI, "ask", "What is the capital of France?", "--json", "--config", DEMO, *_sets(engine, dtype)]
        out, wall, why = _run(cmd, limit_s)
        row: dict[str, Any] = {"engine": engine, "dtype": dtype}
        if out is None:
            rows.append({**row, "episode s": why, "wall s": wall, "auto picked": ""})
            continue
        record = json.loads(next(line for line in reversed(out.stdout.splitlines()) if line.startswith("{")))
        rows.append({**row, "episode s": record["seconds"], "wall s": wall, "auto picked": _picked(out.stderr)})
    return rows


def bench_eval(limit_s: float, questions: int) -> list[dict[str, Any]]:
    rows = []
    for engine, dtype in SETTINGS:
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [*CLI, "eval", "--model", "bundled", "--data", "nq-answerable", "--limit", str(questions),
                   "--config", DEMO, "--out", f"{tmp}/e", *_sets(engine, dtype)]  # fmt: skip
            out, wall, why = _run(cmd, limit_s)
            row: dict[str, Any] = {"engine": engine, "dtype": dtype}
            if out is None:
                rows.append({**row, "questions/min": why, "wall s": wall, "EM": ""})
                continue
            report = json.loads(Path(f"{tmp}/e/summary.json").read_text())["datasets"]["nq-answerable"]
            speed = {"questions/min": report["questions_per_minute"], "wall s": wall, "EM": 100 * report["em"]}
            rows.append({**row, **speed, "auto picked": _picked(out.stderr)})
    return rows


STEP_PARTS = ("timing/proposer_s", "timing/verify_s", "timing/solver_s", "timing/update_s", "timing/weight_sync_s")


def bench_step(limit_s: float) -> list[dict[str, Any]]:
    rows = []
    for engine, dtype in SETTINGS:
        with tempfile.TemporaryDirectory() as tmp:
            bf16 = {"float32": "false", "bfloat16": "true", "auto": "auto"}[dtype]
            cmd = [*CLI, "train", "--config", DEMO, "--run-dir", f"{tmp}/run", "--steps", "1",
                   "--set", "trainer.eval_every=0", "--set", f"learner.bf16={bf16}", *_sets(engine, dtype)]  # fmt: skip
            out, wall, why = _run(cmd, limit_s)
            row: dict[str, Any] = {"engine": engine, "dtype (rollouts and update)": dtype}
            if out is None:
                rows.append({**row, "step s": why, "wall s": wall})
                continue
            m = json.loads(Path(f"{tmp}/run/metrics.jsonl").read_text().splitlines()[0])
            parts = {k.split("/")[1].removesuffix("_s"): m.get(k, 0.0) for k in STEP_PARTS}
            rows.append({**row, "step s": m["timing/step_s"], **parts, "wall s": wall, "auto picked": _picked(out.stderr)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-bf16", action="store_true", help="emulate a CPU without bf16 instructions (see the docstring)")
    parser.add_argument("--parts", default="matmul,encoder,ask,eval,step", help="comma-separated parts to run")
    parser.add_argument("--limit-s", type=float, default=600, help="a CLI row running longer is stopped")
    parser.add_argument("--questions", type=int, default=32, help="evaluation questions")
    parser.add_argument("--settings", default="", help="only these engine:dtype rows, e.g. vllm:float32,auto:auto")
    args = parser.parse_args()
    if args.settings:
        SETTINGS[:] = [tuple(item.split(":")) for item in args.settings.split(",")]  # type: ignore[misc]
    if args.no_bf16 and not all(os.environ.get(k) == v for k, v in NO_BF16_ENV.items()):
        argv = [sys.executable, *sys.argv]
        os.execve(sys.executable, argv, {**os.environ, **NO_BF16_ENV})  # torch reads these when it loads
    from common import print_table

    info = machine()
    print("\n".join(f"- {k}: {v}" for k, v in info.items()))
    tag = f"{info['cpu']}, {info['cores']} cores{', emulated without bf16' if args.no_bf16 else ''}"
    parts = args.parts.split(",")
    if "matmul" in parts:
        print_table(f"Matrix product 1376x576 @ 576x1536 ({tag})", bench_matmul())
    if "encoder" in parts:
        print_table(f"Dense encoder, 512 bundled passages ({tag})", bench_encoder())
    if "ask" in parts:
        print_table(f"searchplay ask, demo config ({tag})", bench_ask(args.limit_s))
    if "eval" in parts:
        title = f"searchplay eval, {args.questions} nq-answerable questions ({tag})"
        print_table(title, bench_eval(args.limit_s, args.questions))
    if "step" in parts:
        print_table(f"One demo training step, seconds ({tag})", bench_step(args.limit_s))


if __name__ == "__main__":
    main()
