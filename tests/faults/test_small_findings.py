"""The small items of reliability v3's finding 11: a benchmark row that fails is reported as failed and the table
goes on; vLLM asked for bfloat16 on a CPU without bf16 instructions is refused before it starts; `plot` refuses an
output that is not a PNG before any work. (SIGTERM while starting: test_interrupt_messages.py; a full disk during a
save: test_damaged_checkpoints.py.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from searchplay.config import load_config
from searchplay.llm.device import DeviceError, resolve_numerics
from tests.test_precision import ZEN1, ZEN4, _fake_cpu

ROOT = Path(__file__).resolve().parents[2]


def test_a_benchmark_row_that_fails_is_reported_and_the_table_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import cpu_speed

    dead = [sys.executable, "-c", "import sys; print('EngineDeadError: engine core died', file=sys.stderr); sys.exit(1)"]
    out, _, why = cpu_speed._run(dead, 60)  # used to raise RuntimeError and lose every other row
    assert out is None and why == "failed (exit 1: EngineDeadError: engine core died)"
    out, _, why = cpu_speed._run([sys.executable, "-c", "print('fine')"], 60)
    assert out is not None and out.stdout == "fine\n" and why == ""


def test_vllm_in_bf16_on_a_cpu_without_bf16_is_refused_before_it_starts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = load_config(None, ["model.engine=vllm", "model.dtype=bfloat16", "model.device=cpu"])
    _fake_cpu(monkeypatch, tmp_path, ZEN1)  # vLLM's CPU build used to die at start with an EngineDeadError
    with pytest.raises(DeviceError, match=r"model\.engine = vllm with model\.dtype = bfloat16: .*set model\.dtype = float32"):
        resolve_numerics(cfg)
    assert resolve_numerics(load_config(None, ["model.engine=vllm", "model.dtype=auto"]))[0].model.dtype == "float32"
    _fake_cpu(monkeypatch, tmp_path, ZEN4)
    assert resolve_numerics(cfg)[0].model.engine == "vllm"


def test_plot_refuses_an_output_that_is_not_a_png_before_any_work(tmp_path: Path) -> None:
    run = ROOT / "docs" / "study" / "v2" / "runs"
    runs = sorted(p for p in run.iterdir() if p.is_dir())[:1]
    cmd = [sys.executable, "-m", "searchplay", "plot", *map(str, runs), "--out", str(tmp_path / "x.jinja")]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.returncode != 0 and "Traceback" not in out.stderr, out.stderr[-2000:]  # was a matplotlib traceback
    assert "the plot is a PNG file; give a name ending in .png" in " ".join(out.stderr.split())
    assert not (tmp_path / "x.jinja").exists()
