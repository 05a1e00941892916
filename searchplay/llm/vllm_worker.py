"""Runs inside vLLM's worker process (named by `worker_extension_cls`): loads weights sent by `VLLMEngine`, in
buckets through vLLM's RPC (llm/weight_buckets.py) or broadcast over a weight group (llm/weight_broadcast.py).

One sync is one reload session, as verl does it: the first bucket opens vLLM's layerwise reload (each layer is
processed once all its weights have arrived), `finish_weights` closes it after the last. Calling vLLM's
`reload_weights` per bucket instead reopened the whole model for every bucket: each layer a bucket did not hold was
put back with a "Failed to load weights" warning, hundreds per sync.
"""

from __future__ import annotations

from typing import Any

import torch
from vllm.config import set_current_vllm_config
from vllm.model_executor.model_loader.reload.layerwise import finalize_layerwise_reload, initialize_layerwise_reload

from searchplay.llm.weight_broadcast import WeightGroup, join, receive
from searchplay.llm.weight_buckets import Layout, from_bytes, open_cuda, unpack


class WeightLoader:
    """Mixed into vLLM's worker class; `self.model_runner` is the worker's."""

    model_runner: Any
    weight_group: WeightGroup | None = None
    reloading: bool = False  # a sync's reload session is open
    reload_sessions: int = 0

    def load_bucket(self, layout: Layout, dtype: str, payload: bytes | dict[str, Any]) -> int:
        """Load one bucket (raw bytes, or a CUDA IPC handle to the learner's buffer); returns the bytes loaded.
        The learner's buffer is not read after this returns."""
        flat = from_bytes(payload, getattr(torch, dtype)) if isinstance(payload, bytes) else open_cuda(payload)
        self._load(unpack(flat, layout))
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
            self._load(tensors)
            total += sum(t.numel() * t.element_size() for _, t in tensors)
        self.finish_weights()
        return total

    def finish_weights(self) -> int:
        """Close the sync's reload session: layers not processed yet (attention) are, and state derived from the old
        weights is dropped. Returns the sessions opened so far (one per sync)."""
        if self.reloading:
            runner = self.model_runner
            with set_current_vllm_config(runner.vllm_config):
                finalize_layerwise_reload(runner.get_model(), runner.vllm_config.model_config)
            self.reloading = False
            runner.reset_lora_state()
            runner.reset_encoder_cache()
            runner.reset_mm_cache()
        return self.reload_sessions

    def _load(self, tensors: list[tuple[str, torch.Tensor]]) -> None:
        """Hugging Face names in: vLLM maps them, fuses projections (q/k/v, gate/up) and redoes the layout processing
        that loading applies (the CPU build repacks weights), layer by layer as each is complete."""
        runner = self.model_runner
        model = runner.get_model()
        with set_current_vllm_config(runner.vllm_config):
            if not self.reloading:
                initialize_layerwise_reload(model)
                self.reloading, self.reload_sessions = True, self.reload_sessions + 1
            model.load_weights(tensors)
