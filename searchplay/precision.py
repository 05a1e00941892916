"""Which float type to compute in: bfloat16 only where the hardware has instructions for it.

A CPU without AVX512_BF16 or AMX_BF16 (AMD Zen 1-3, Intel client chips, most laptops; Apple M1)
emulates bfloat16 in software: on a 2-core AMD EPYC (Zen 1) a SmolLM2-135M forward and backward
took 20x longer under bf16 autocast than in float32, and a matrix product 4x (benchmarks/README.md,
"CPU speed"). Where the instructions exist (Intel Xeon 4th gen and later with AMX, AMD Zen 4+,
CUDA GPUs of compute capability 8+) bfloat16 is the fast choice. `dtype = "auto"` takes the fast
one; the reason is kept with the choice so that a run's config says why it computed as it did.

This sits below both `llm` and `search` (the policy and the dense encoder make the same choice),
so it names no model code. Setting ONEDNN_MAX_CPU_ISA to an ISA without bf16 (e.g. AVX2) caps
oneDNN, torch's bf16 kernel library, and is read here as "no native bf16".
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

import torch

CPUINFO = Path("/proc/cpuinfo")
# /proc/cpuinfo flag -> name shown in reasons: x86 AVX-512 BF16 and AMX BF16; Arm's BF16 (Features line)
BF16_CPU_FLAGS = {"amx_bf16": "AMX-BF16", "avx512_bf16": "AVX512-BF16", "bf16": "BF16"}
# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) below the first x86 ISA with bf16 dot products
ONEDNN_ISAS_WITHOUT_BF16 = {
    "SSE41",
    "AVX",
    "AVX2",
    "AVX2_VNNI",
    "AVX2_VNNI_2",
    "AVX512_CORE",
    "AVX512_CORE_VNNI",
}


@dataclass(frozen=True)
class Precision:
    dtype: str  # "bfloat16" | "float32"
    reason: str


def cpu_flags(cpuinfo: str) -> set[str]:
    """The feature flags of the first processor in /proc/cpuinfo text ('flags' on x86, 'Features' on Arm)."""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return set(value.split())
    return set()


def cpu_model(cpuinfo: str | None = None) -> str:
    """The CPU's marketing name ('model name' in /proc/cpuinfo), else what the platform module says."""
    text = cpuinfo if cpuinfo is not None else _read_cpuinfo()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "cpu model"):
            return value.strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_bf16(flags: set[str], onednn_max_isa: str = "") -> tuple[bool, str]:
    """(whether this CPU computes bfloat16 natively, why), from its feature flags and the oneDNN cap."""
    found = [name for flag, name in BF16_CPU_FLAGS.items() if flag in flags]
    cap = onednn_max_isa.strip().upper()
    if found and cap in ONEDNN_ISAS_WITHOUT_BF16:
        return False, f"the CPU has {'/'.join(found)} but ONEDNN_MAX_CPU_ISA={cap} caps oneDNN below bf16"
    if found:
        return True, f"the CPU computes bfloat16 natively ({'/'.join(found)})"
    return False, "the CPU has no bfloat16 instructions (no AVX512-BF16 or AMX-BF16): bfloat16 would be emulated"


def _read_cpuinfo() -> str:
    try:
        return CPUINFO.read_text(errors="replace")
    except OSError:
        return ""


def _this_cpu_flags() -> set[str]:
    """/proc/cpuinfo where there is one (Linux); elsewhere the flags torch's cpuinfo reports."""
    text = _read_cpuinfo()
    if text:
        return cpu_flags(text)
    flags = set()
    if getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)():
        flags.add("avx512_bf16")
    if getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)():
        flags.add("amx_bf16")
    return flags


def native_bf16(device_type: str) -> tuple[bool, str]:
    """(whether `device_type` ('cpu' or 'cuda') computes bfloat16 natively, why)."""
    if device_type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return True, f"the GPU ({torch.cuda.get_device_name()}) computes bfloat16 natively"
        return False, f"the GPU ({torch.cuda.get_device_name()}) has no native bfloat16"
    return cpu_bf16(_this_cpu_flags(), os.environ.get("ONEDNN_MAX_CPU_ISA", ""))


def resolve_dtype(requested: str, device_type: str) -> Precision:
    """`auto` -> bfloat16 where `device_type` computes it natively, else float32; any other value as given."""
    if requested != "auto":
        return Precision(requested, "set in the config")
    native, why = native_bf16(device_type)
    return Precision("bfloat16" if native else "float32", why)
