"""Metrics logging: JSONL always; TensorBoard and wandb when asked; a rich progress display.

One JSON line per step in `metrics.jsonl` is the source of truth (other tools read it); the
optional back-ends get the same numbers. The console shows step, ETA and the key metrics.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import resource
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from searchplay.config import Config
from searchplay.jsonl import finite_json
from searchplay.train.run_dir import RunDir

DIVERSITY_WARNING = 0.25  # distinct query prefixes per query below which the console warns of a collapse
KEY_METRICS = (
    ("solver/acc", "solver acc"),
    ("proposer/valid_rate", "valid q"),
    ("proposer/reward_mean", "prop reward"),
    ("timing/step_s", "step s"),
)


def trim_heap() -> None:
    """Hand the heap's free pages back to the system (glibc's malloc_trim; a no-op elsewhere).

    CPU tensors of a different shape every step leave the C heap at its high-water mark; trimming
    once a step keeps the resident memory near what the process holds, for the processes beside it
    (a vLLM engine, a retriever) and so that `memory/rss_mib` shows growth, not fragmentation.
    """
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def rss_mib() -> float:
    """This process's resident memory now (Linux /proc), else its peak so far: a run's memory over steps."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class MetricsLogger:
    def __init__(self, run: RunDir, cfg: Config, total_steps: int, start_step: int = 0, console: Console | None = None):
        self.run, self.trainer_cfg = run, cfg.trainer
        self.console = console or Console(stderr=True)
        self._tb = self._wandb = None
        if cfg.trainer.tensorboard:
            try:  # optional extra, imported only when asked for
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise RuntimeError(
                    "trainer.tensorboard needs the 'tensorboard' extra: pip install 'searchplay[tensorboard]'"
                ) from None
            self._tb = SummaryWriter(str(run.root / "tensorboard"))
        if cfg.trainer.wandb:
            try:  # optional extra, imported only when asked for
                import wandb
            except ImportError:
                raise RuntimeError("trainer.wandb needs the 'wandb' extra: pip install 'searchplay[wandb]'") from None
            self._wandb = wandb.init(project="searchplay", dir=str(run.root), name=run.root.name, resume="allow")
        self._progress = Progress(
            TextColumn("step"),
            MofNCompleteColumn(),
            BarColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[line]}"),
            console=self.console,
            transient=False,
        )
        self._task = self._progress.add_task("train", total=total_steps, completed=start_step, line="")
        self._progress.start()

    def phase(self, step: int, text: str) -> None:
        """Show what step `step` is doing now (a step takes minutes on a CPU without bf16 instructions)."""
        self._progress.update(self._task, line=f"step {step}: {text}")

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        trim_heap()
        record = {
            "step": step,
            "time": time.time(),
            **{k: finite_json(v) for k, v in metrics.items()},
            "memory/rss_mib": rss_mib(),
        }
        self.run.append_jsonl(self.run.metrics, record)
        numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        if self._tb is not None:
            for k, v in numeric.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(numeric, step=step)
        for role in ("solver", "proposer"):
            diversity, queries = numeric.get(f"{role}/query_diversity"), numeric.get(f"{role}/queries", 0)
            if diversity is not None and queries >= 8 and diversity < DIVERSITY_WARNING:
                self.console.print(
                    f"[yellow]warning:[/] step {step}: {role} search queries collapsed: {diversity:.2f} distinct "
                    "first-three-word prefixes per query (see its trajectories; docs/method.md, 'Roles')",
                    highlight=False,
                )
        line = "  ".join(f"{label} {numeric[k]:.2f}" for k, label in KEY_METRICS if k in numeric)
        self._progress.update(self._task, completed=step, line=line)
        self._progress.console.print(f"step {step}: {line}", highlight=False)

    def close(self) -> None:
        self._progress.stop()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
