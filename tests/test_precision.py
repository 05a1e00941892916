"""dtype / bf16 / engine = "auto": bfloat16 and vLLM only where the hardware computes bfloat16 natively.

The resolver is tested on /proc/cpuinfo texts of real CPU kinds; the end-to-end test trains on this
machine with oneDNN capped at AVX2 (ONEDNN_MAX_CPU_ISA), which makes any CPU a CPU without bf16.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import torch

from searchplay import precision
from searchplay.assets.names import TINY, model_path
from searchplay.config import Config, ConfigError, LearnerConfig, load_config
from searchplay.llm.device import choose_engine, resolve_numerics
from searchplay.llm.transformers_engine import load_model
from searchplay.precision import cpu_bf16, cpu_flags, cpu_model, resolve_dtype
from searchplay.rl.learner import Learner

ROOT = Path(__file__).resolve().parents[1]

# /proc/cpuinfo excerpts (flags trimmed to what matters plus neighbours)
ZEN1 = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7571
flags\t\t: fpu sse sse2 ssse3 sse4_1 sse4_2 avx f16c fma avx2 bmi2 sha_ni
"""
SAPPHIRE_RAPIDS = """processor\t: 0
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: fpu avx2 avx512f avx512bw avx_vnni avx512_bf16 amx_bf16 amx_tile amx_int8
"""
ZEN4 = """model name\t: AMD EPYC 9654 96-Core Processor
flags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni
"""
SKYLAKE_X = """model name\t: Intel(R) Xeon(R) Gold 6154 CPU @ 3.00GHz
flags\t\t: fpu avx2 avx512f avx512bw avx512vl avx512cd
"""
GRAVITON3 = """processor\t: 0
BogoMIPS\t: 2100.00
Features\t: fp asimd evtstrm aes sha1 sve asimdbf16 bf16 i8mm
"""
GRAVITON2 = """processor\t: 0
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics
"""


@pytest.mark.parametrize(
    ("cpuinfo", "native"),
    [(ZEN1, False), (SKYLAKE_X, False), (GRAVITON2, False), (SAPPHIRE_RAPIDS, True), (ZEN4, True), (GRAVITON3, True)],
)
def test_native_bf16_is_read_from_the_cpu_flags(cpuinfo: str, native: bool) -> None:
    ok, reason = cpu_bf16(cpu_flags(cpuinfo))
    assert ok is native
    assert ("natively" in reason) is native and ("emulated" in reason) is not native


def test_a_onednn_cap_below_bf16_means_no_native_bf16() -> None:
    flags = cpu_flags(SAPPHIRE_RAPIDS)
    ok, reason = cpu_bf16(flags, "avx2")
    assert not ok and "ONEDNN_MAX_CPU_ISA=AVX2" in reason
    assert cpu_bf16(flags, "AVX512_CORE_AMX")[0] and cpu_bf16(flags, "")[0]


def test_cpu_model_names_the_processor() -> None:
    assert cpu_model(ZEN1) == "AMD EPYC 7571"
    assert cpu_model(SAPPHIRE_RAPIDS).startswith("Intel(R) Xeon(R) Platinum")
    assert cpu_model("") != ""  # falls back to the platform module


def test_an_explicit_dtype_is_kept_whatever_the_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_cpu(monkeypatch, tmp_path, ZEN1)
    assert resolve_dtype("bfloat16", "cpu").dtype == "bfloat16"
    assert resolve_dtype("auto", "cpu").dtype == "float32"
    _fake_cpu(monkeypatch, tmp_path, SAPPHIRE_RAPIDS)
    assert resolve_dtype("float32", "cpu").dtype == "float32"
    assert resolve_dtype("auto", "cpu").dtype == "bfloat16"


def test_numerics_on_a_cpu_without_bf16(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_cpu(monkeypatch, tmp_path, ZEN1)
    cfg = Config()
    cfg.model.device = "cpu"
    assert (cfg.model.dtype, cfg.learner.bf16, cfg.model.engine) == ("auto", "auto", "transformers")
    cfg.model.engine = "auto"
    out, notes = resolve_numerics(cfg)
    assert (out.model.dtype, out.learner.bf16, out.model.engine) == ("float32", False, "transformers")
    assert cfg.model.dtype == "auto"  # the caller's config is not changed
    assert len(notes) == 3 and all("no bfloat16 instructions" in n or "not installed" in n for n in notes)
    assert notes[0].startswith("model.dtype = float32: ")


def test_numerics_on_a_cpu_with_amx(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_cpu(monkeypatch, tmp_path, SAPPHIRE_RAPIDS)
    cfg = Config()
    cfg.model.device, cfg.learner.bf16 = "cpu", False  # an explicit value stays and gets no note
    out, notes = resolve_numerics(cfg)
    assert (out.model.dtype, out.learner.bf16) == ("bfloat16", False)
    assert [n.split(" =")[0] for n in notes] == ["model.dtype"] and "AMX-BF16" in notes[0]


def test_auto_engine_is_vllm_only_where_bf16_is_native(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr("searchplay.llm.device.vllm_installed", lambda: True)
    _fake_cpu(monkeypatch, tmp_path, ZEN1)
    assert choose_engine("cpu")[0] == "transformers"
    _fake_cpu(monkeypatch, tmp_path, ZEN4)
    assert choose_engine("cpu")[0] == "vllm"
    assert choose_engine("cpu", one_episode=True)[0] == "transformers"  # ask: vLLM's start-up costs more than it saves
    monkeypatch.setattr("searchplay.llm.device.vllm_installed", lambda: False)
    assert choose_engine("cpu") == ("transformers", "vLLM is not installed")


def test_learner_bf16_takes_true_false_or_auto_and_names_a_bad_value() -> None:
    assert load_config(None, ["learner.bf16=true"]).learner.bf16 is True
    assert load_config(None, ["learner.bf16=false"]).learner.bf16 is False
    assert load_config(None, ["learner.bf16=auto"]).learner.bf16 == "auto"
    with pytest.raises(ConfigError, match=r"learner\.bf16: value 'yes' is not of the expected type bool \| 'auto'"):
        load_config(None, ["learner.bf16=yes"])
    with pytest.raises(ConfigError, match=r"model\.dtype: value 'float16'"):
        load_config(None, ["model.dtype=float16"])


def test_auto_model_and_learner_follow_the_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _fake_cpu(monkeypatch, tmp_path, ZEN1)
    model, _ = load_model(model_path(TINY), "auto", "cpu")
    assert next(model.parameters()).dtype == torch.float32
    assert Learner(model, LearnerConfig(bf16="auto")).bf16 is False
    _fake_cpu(monkeypatch, tmp_path, SAPPHIRE_RAPIDS)
    assert next(load_model(model_path(TINY), "auto", "cpu")[0].parameters()).dtype == torch.bfloat16
    assert Learner(model, LearnerConfig(bf16="auto")).bf16 is True


def test_a_run_on_a_cpu_without_bf16_resolves_to_float32_and_says_why(tmp_path: Path) -> None:
    """A real run: oneDNN capped at AVX2 makes this machine a CPU without bf16, whatever it is."""
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "searchplay", "train", "-c", "configs/tiny-test.toml", "--run-dir", str(run), "--steps", "1",
           "--set", "model.dtype=auto", "--set", "learner.bf16=auto", "--set", "trainer.eval_every=0"]  # fmt: skip
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2"}
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "model.dtype = float32: " in out.stderr and "learner.bf16 = false: " in out.stderr
    text = (run / "config.toml").read_text()
    saved = tomllib.loads(text)
    assert saved["model"]["dtype"] == "float32" and saved["learner"]["bf16"] is False
    assert "# resolved on this machine: model.dtype = float32: " in text
    assert "caps oneDNN below bf16" in text or "no bfloat16 instructions" in text
    # resuming with the original config ('auto') is not a change of config
    more = [sys.executable, "-m", "searchplay", "train", "--resume", str(run), "--steps", "2", "-c", "configs/tiny-test.toml",
            "--set", "model.dtype=auto", "--set", "learner.bf16=auto", "--set", "trainer.eval_every=0",
            "--set", "trainer.steps=1"]  # fmt: skip
    resumed = subprocess.run(more, capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2


def _fake_cpu(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cpuinfo: str) -> None:
    path = tmp_path / f"cpuinfo-{abs(hash(cpuinfo))}"
    path.write_text(cpuinfo)
    monkeypatch.setattr(precision, "CPUINFO", path)
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
