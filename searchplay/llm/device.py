"""Where models run: `model.device` = auto | cpu | cuda | cuda:N, checked before anything loads.

One device holds the policy, the reference model, the engine's tensors and the learner's; the
optimizer state follows the parameters. `auto` takes the first CUDA device when torch has one.
Sampling draws from a CPU generator on every device, so a seed gives the same tokens wherever
the logits were computed (up to the logits themselves).
"""

from __future__ import annotations

import copy
import importlib.util
from typing import Literal

import torch

from searchplay.config import DEVICE_PATTERN, Config
from searchplay.precision import native_bf16, resolve_dtype


class DeviceError(ValueError):
    """A device this machine does not have; the message says which devices it has."""


def resolve_device(name: str) -> torch.device:
    if not DEVICE_PATTERN.fullmatch(name):
        raise DeviceError(f"model.device = {name!r}: use auto, cpu, cuda or cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise DeviceError(
                f"model.device = {name!r}, but torch {torch.__version__} ({build}) sees no CUDA device; use cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"model.device = {name!r}, but this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device


def bind_cuda(device: torch.device) -> torch.device:
    """Make `device` this process's current CUDA device and return it with its index (a CPU device as it is).

    A bare `cuda` means the first device the process sees: under Ray, whose CUDA_VISIBLE_DEVICES leaves each
    worker its one GPU, that is index 0. `torch.cuda.set_device(torch.device("cuda"))` raises instead
    ("Expected a torch.device with a specified index"), which is why the index is made explicit here."""
    if device.type != "cuda":
        return device
    index = 0 if device.index is None else device.index
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def vllm_installed() -> bool:
    """Whether vLLM is importable (not imported here: it is heavy and optional)."""
    return importlib.util.find_spec("vllm") is not None


def choose_engine(device_type: str, one_episode: bool = False) -> tuple[Literal["transformers", "vllm"], str]:
    """`model.engine = "auto"`: (engine, why). vLLM where it is installed and the device computes bfloat16
    natively: a CUDA GPU, or a CPU with AMX/AVX512-BF16, where its CPU build ran the demo's rollouts at
    3.2x our engine's tokens/s. On a CPU without them vLLM's CPU build loses its oneDNN kernels and our
    engine in float32 was faster (benchmarks/README.md, "CPU speed"). `one_episode` (ask): vLLM's start
    (40-50 s on a CPU) costs more than it saves on one question, so our engine answers it."""
    if not vllm_installed():
        return "transformers", "vLLM is not installed"
    if one_episode:
        return "transformers", "one question: vLLM's start-up would take longer than the answer"
    if device_type == "cuda":
        return "vllm", "vLLM is installed and the model runs on a CUDA GPU"
    native, why = native_bf16(device_type)
    if native:
        return "vllm", f"vLLM's CPU build is installed and {why}"
    return "transformers", f"{why}, where vLLM's CPU build runs slower than this engine in float32"


def resolve_numerics(cfg: Config, one_episode: bool = False) -> tuple[Config, list[str]]:
    """A copy of `cfg` with `model.dtype`, `learner.bf16` and `model.engine` decided for this machine, and one
    note per field that was `auto` ("model.dtype = float32: the CPU has no bfloat16 instructions ...").

    Called at the top (train, eval, ask, serve-model) so that what runs, and the config a run records,
    say the same thing; Ray workers receive the driver's resolved copy. `one_episode`: see choose_engine."""
    out = copy.deepcopy(cfg)
    device = resolve_device(cfg.model.device).type
    notes = []
    choice = resolve_dtype("auto", device)  # one reading of the hardware serves both fields
    if cfg.model.dtype == "auto":
        out.model.dtype = "bfloat16" if choice.dtype == "bfloat16" else "float32"
        notes.append(f"model.dtype = {choice.dtype}: {choice.reason}")
    if cfg.learner.bf16 == "auto":
        out.learner.bf16 = choice.dtype == "bfloat16"
        notes.append(f"learner.bf16 = {str(out.learner.bf16).lower()}: {choice.reason}")
    if cfg.model.engine == "auto":
        out.model.engine, reason = choose_engine(device, one_episode)
        notes.append(f"model.engine = {out.model.engine}: {reason}")
    if device == "cpu" and out.model.engine == "vllm" and out.model.dtype == "bfloat16":
        native, why = native_bf16(device)
        if not native:  # its CPU build then dies at start with an EngineDeadError that says nothing of the cause
            raise DeviceError(
                f"model.engine = vllm with model.dtype = bfloat16: {why}, and vLLM's CPU build cannot run bfloat16 "
                "without them; set model.dtype = float32 (or auto), or model.engine = transformers"
            )
    return out, notes
