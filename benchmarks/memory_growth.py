"""The trainer's resident memory over a run: does it level off?

    .venv/bin/searchplay train -c configs/cpu-smollm2.toml --run-dir runs/memory-100 --steps 100 --set trainer.eval_every=0
    .venv/bin/python benchmarks/memory_growth.py runs/memory-100

Reads `memory/rss_mib` (the trainer process, after its once-a-step heap trim) from the run's
metrics.jsonl and prints it at a few steps and its growth per step over consecutive windows. A
vLLM engine's own process is not in the figure.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import print_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--window", type=int, default=20, help="steps per growth window")
    args = ap.parse_args()
    rss = {
        m["step"]: m["memory/rss_mib"]
        for m in map(json.loads, (args.run_dir / "metrics.jsonl").read_text().splitlines())
        if "memory/rss_mib" in m
    }
    steps = sorted(rss)
    rows = []
    for lo in range(steps[0], steps[-1], args.window):
        hi = min(lo + args.window, steps[-1])
        if lo in rss and hi in rss:
            rows.append({"steps": f"{lo}-{hi}", "RSS at start MiB": f"{rss[lo]:.0f}", "RSS at end MiB": f"{rss[hi]:.0f}",
                         "growth MiB/step": f"{(rss[hi] - rss[lo]) / (hi - lo):.1f}"})  # fmt: skip
    print_table(f"Trainer RSS over {len(steps)} steps of {args.run_dir}", rows)


if __name__ == "__main__":
    main()
