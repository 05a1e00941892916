"""Runs inside vLLM's worker process (named by `worker_extension_cls`): loads weights sent by `VLLMEngine`, in
buckets through vLLM's RPC (llm/weight_buckets.py) or broadcast over a weight group (llm/weight_broadcast.py)."""

from __future__ import annotations

from typing import Any

import torch

from searchplay.llm.weight_broadcast import WeightGroup, join, receive
from searchplay.llm.weight_buckets import Layout, from_bytes, open_cuda, unpack


class WeightLoader:
    """Mixed into vLLM's worker class; `self.model_runner` is the worker's."""

    model_runner: Any
    weight_group: WeightGroup | None = None

    def load_bucket(self, layout: Layout, dtype: str, payload: bytes | dict[str, Any]) -> int:
        """Load one bucket (raw bytes, or a CUDA IPC handle to the learner's buffer); returns the bytes loaded.
        The learner's buffer is not read after this returns."""
        flat = from_bytes(payload, getattr(torch, dtype)) if isinstance(payload, bytes) else open_cuda(payload)
        self._reload(unpack(flat, layout))
        if flat.is_cuda:
            torch.cuda.current_stream(flat.device).synchronize()  # done reading the sender's memory
        return flat.numel() * flat.element_size()

    def join_weight_group(self, host: str, port: int, rank: int, world: int) -> None:
        """Join the learner's weight group as `rank` (a new group replaces the one before)."""
        self.weight_group = join(host, port, rank, world, torch.device(self.model_runner.device))

    def receive_weights(self) -> int:
        """Load every bucket the group's sender broadcasts, each as it arrives; returns the bytes loaded."""
        total = 0
        for tensors in receive(self.weight_group):
            self._reload(tensors)
            total += sum(t.numel() * t.element_size() for _, t in tensors)
        return total

    def _reload(self, tensors: list[tuple[str, torch.Tensor]]) -> None:
        """vLLM's in-place reload: maps Hugging Face names, fuses projections (q/k/v, gate/up) and redoes the layout
        processing that loading applies (the CPU build repacks weights)."""
        self.model_runner.reload_weights(weights_iterator=tensors, is_checkpoint_format=True)
