"""Where models run: `model.device` = auto | cpu | cuda | cuda:N, checked before anything loads.

One device holds the policy, the reference model, the engine's tensors and the learner's; the
optimizer state follows the parameters. `auto` takes the first CUDA device when torch has one.
Sampling draws from a CPU generator on every device, so a seed gives the same tokens wherever
the logits were computed (up to the logits themselves).
"""

from __future__ import annotations

import torch

from searchplay.config import DEVICE_PATTERN


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
