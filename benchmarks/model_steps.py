"""Seconds per training step and peak memory for each policy model, to choose the study's model size.

Each model trains `--steps` steps of the same config (`searchplay train`, a fresh process each, no
evaluation, no checkpoint before the last step) and the table gives the median over the steps after the first
(vLLM start-up and first-touch costs land in step 1) of the step time and of its parts, and the trainer
process's largest RSS at the end of a step (vLLM's own worker processes are not in it).

    .venv/bin/python benchmarks/model_steps.py --steps 2 --set game.mode=supervised --set game.batch_size=2 \\
        --set game.solver_n=4 --set trainer.dynamic_sampling=false --set learner.micro_batch_tokens=2048 \\
        --set learner.gradient_checkpointing=true \\
        --model "bundled" --model "bundled:qwen2.5-coder-0.5b-instruct" \\
        --model "bundled:qwen2.5-coder-1.5b-instruct|learner.lora_rank=16|learner.lora_base_dtype=bfloat16"

The supervised mode without dynamic sampling gives every model the same work: 8 solver episodes of up to
3 turns and an update on all of them, whatever it answers. Checkpointing and 2,048-token micro-batches: without
them the 0.5B model's full fine-tuning was killed for memory at 20 GB (its activations at 8,192 tokens).

A `--model` value is a model name, then optionally `|`-separated overrides that apply to it alone
(LoRA for a model whose full AdamW state does not fit this machine's memory; with the base held in fp32 the
1.5B model was killed for memory beside vLLM, with `lora_base_dtype=bfloat16` it trains in 4.3 GiB).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from chain import cpu_name
from common import print_table

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("timing/proposer_s", "timing/verify_s", "timing/solver_s", "timing/step_s")


def run_model(spec: str, config: str, steps: int, extra: list[str], work: Path) -> dict[str, Any]:
    model, *overrides = spec.split("|")
    run = work / model.replace("/", "_").replace(":", "_")
    sets = [f"model.path={model}", "trainer.eval_every=0", f"trainer.save_every={steps}", *extra, *overrides]
    cmd = [sys.executable, "-m", "searchplay", "train", "-c", config, "--run-dir", str(run), "--steps", str(steps)]
    for s in sets:
        cmd += ["--set", s]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if out.returncode < 0:  # a signal: on this machine SIGKILL has been the kernel's out-of-memory killer (dmesg)
        return {"model": spec, "error": f"killed by signal {-out.returncode} (SIGKILL: out of memory? see dmesg)"}
    if out.returncode != 0:
        return {"model": spec, "error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    later = metrics[1:] or metrics
    row: dict[str, Any] = {"model": spec}
    for key in PARTS:
        row[key.split("/")[1]] = round(statistics.median(m.get(key, 0.0) for m in later), 1)
    row["update_and_sync_s"] = round(row["step_s"] - row["proposer_s"] - row["verify_s"] - row["solver_s"], 1)
    row["rss_gib"] = round(max(m.get("memory/rss_mib", 0.0) for m in metrics) / 1024, 1)
    row["steps"] = len(metrics)
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", action="append", required=True, help="model name, then |-separated overrides for it")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("-c", "--config", default="configs/cpu-smollm2.toml")
    p.add_argument("--set", action="append", default=[], help="override for every model")
    p.add_argument("--out", help="also write the table here (markdown)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for spec in args.model:
            rows.append(run_model(spec, args.config, args.steps, args.set, Path(tmp)))
            print(rows[-1], flush=True)
    title = f"Seconds per step by policy model ({args.config}, {args.steps} steps, median after step 1; {cpu_name()})"
    print_table(title, rows)
    if args.out:
        cols = list(dict.fromkeys(k for r in rows for k in r))
        lines = [f"### {title}", "", "| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
        lines += ["| " + " | ".join(str(r.get(c, "")).replace("|", "\\|") for c in cols) + " |" for r in rows]
        Path(args.out).write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
