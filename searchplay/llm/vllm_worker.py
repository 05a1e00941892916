"""Runs inside vLLM's worker process (named by `worker_extension_cls`): loads weights sent by `VLLMEngine.sync_weights`."""

from __future__ import annotations

from typing import Any

import torch


class WeightLoader:
    """Mixed into vLLM's worker class; `self.model_runner` is the worker's."""

    model_runner: Any

    def load_named_weights(self, weights: list[tuple[str, str, list[int], bytes]]) -> int:
        """Load (Hugging Face parameter name, dtype, shape, raw bytes) into the running model with vLLM's
        in-place reload, which maps names, fuses projections (q/k/v, gate/up) and redoes the layout
        processing that loading applies (the CPU build repacks weights). Returns how many were loaded."""
        tensors = [
            (name, torch.frombuffer(bytearray(data), dtype=getattr(torch, dtype)).reshape(shape))
            for name, dtype, shape, data in weights
        ]
        self.model_runner.reload_weights(weights_iterator=tensors, is_checkpoint_format=True)
        return len(tensors)
