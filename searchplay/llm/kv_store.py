"""Key/value caches kept between generate calls, so a prompt that extends a kept sequence prefills only its new tokens.

A multi-turn episode's next prompt is its previous prompt + what the model wrote + the
loop-inserted tags and retrieved documents. Re-encoding all of it every turn makes the cost of a
turn grow with the episode; keeping each finished sequence's keys/values and matching the next
prompt by its longest common prefix makes it proportional to the new tokens only (what vLLM's
automatic prefix caching does on GPUs). The store is bounded in bytes and lives only as long as
one `Engine.keep_kv()` block, so it can never serve keys/values computed by older weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

LayerKV = tuple[torch.Tensor, torch.Tensor]  # (keys, values), each [kv_heads, tokens, head_dim]


@dataclass(eq=False)  # compared by identity: removal must not compare arrays
class KeptSequence:
    ids: np.ndarray  # the token ids whose keys/values are kept, in order
    layers: list[LayerKV]

    @property
    def nbytes(self) -> int:
        return sum(k.numel() * k.element_size() + v.numel() * v.element_size() for k, v in self.layers)


def common_prefix_length(a: np.ndarray, b: np.ndarray) -> int:
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if differ.size else n


class KVStore:
    """Kept sequences, oldest first; a sequence that a newer one extends is dropped (it is redundant)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.entries: list[KeptSequence] = []
        self.nbytes = 0

    def match(self, prompt: np.ndarray) -> tuple[KeptSequence | None, int]:
        """The kept sequence sharing the longest prefix with `prompt`, and that length.

        At most len(prompt) - 1 tokens are reused: the last prompt token must be fed to get the
        logits of the first new token.
        """
        best, best_n = None, 0
        for entry in self.entries:
            n = min(common_prefix_length(entry.ids, prompt), len(prompt) - 1)
            if n > best_n:
                best, best_n = entry, n
        return best, best_n

    def add(self, seq: KeptSequence) -> None:
        superseded = [
            e for e in self.entries if len(e.ids) <= len(seq.ids) and common_prefix_length(e.ids, seq.ids) == len(e.ids)
        ]
        for e in superseded:
            self._remove(e)
        if seq.nbytes > self.max_bytes:
            return
        self.entries.append(seq)
        self.nbytes += seq.nbytes
        while self.nbytes > self.max_bytes:
            self._remove(self.entries[0])

    def _remove(self, entry: KeptSequence) -> None:
        self.entries.remove(entry)
        self.nbytes -= entry.nbytes
