"""Runs inside vLLM's worker process (named by `worker_extension_cls`): loads weights sent by `VLLMEngine.sync_weights`."""

from __future__ import annotations

from typing import Any

import torch

from searchplay.llm.weight_buckets import Layout, from_bytes, open_cuda, unpack


class WeightLoader:
    """Mixed into vLLM's worker class; `self.model_runner` is the worker's."""

    model_runner: Any

    def load_bucket(self, layout: Layout, dtype: str, payload: bytes | tuple[Any, ...]) -> int:
        """Load one bucket (llm/weight_buckets.py: raw bytes, or a CUDA IPC handle to the learner's buffer) into
        the running model with vLLM's in-place reload, which maps Hugging Face names, fuses projections (q/k/v,
        gate/up) and redoes the layout processing that loading applies (the CPU build repacks weights). Returns
        how many tensors were loaded; the learner's buffer is not read after this returns."""
        flat = from_bytes(payload, getattr(torch, dtype)) if isinstance(payload, bytes) else open_cuda(payload)
        tensors = unpack(flat, layout)
        self.model_runner.reload_weights(weights_iterator=tensors, is_checkpoint_format=True)
        if flat.is_cuda:
            torch.cuda.current_stream(flat.device).synchronize()  # done reading the sender's memory
        return len(tensors)
