"""LoRA (`learner.lora_rank` > 0): low-rank adapters on every linear layer but the output projection are
trained, the base stays frozen (PEFT, the optional extra `lora`). What it saves on one GPU: no gradients or
AdamW moments for the base, and no reference model (the KL reference is the same model with its adapters
turned off).

What leaves the learner is the merged model (base + the adapters' product, under the base's own parameter
names): the rollout engine (vLLM or ours) and every later command load a plain model directory, one sync
path for all engines, at the cost of sending the whole model each step rather than the adapters (vLLM's
own LoRA serving would need adapter hot-swapping in every engine). Checkpoints also keep the adapters
(`model/adapter/`), so that resuming goes on from the same base and adapters, with the same reference.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from peft.tuners.lora import Linear as LoraLinear
from safetensors.torch import load_file


def add_adapters(model: Any, rank: int, alpha: int, adapters: Path | None = None) -> PeftModel:
    """`model` with trainable adapters of `rank` on its linear layers (not the output projection), the base
    frozen; `adapters`: the adapter directory of a checkpoint to continue from."""
    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules="all-linear", bias="none")
    peft_model = get_peft_model(model, config)
    if adapters is not None:
        set_peft_model_state_dict(peft_model, load_file(str(adapters / "adapter_model.safetensors")))
    return peft_model


def is_lora(model: Any) -> bool:
    return isinstance(model, PeftModel)


class Merged(Mapping[str, torch.Tensor]):
    """The weights the base model would have with the adapters merged in, by the base's parameter names, each merged
    when it is read: a sync that reads them bucket by bucket holds one bucket's merged weights at a time, not a whole
    fp32 model beside the base (28 GiB at 7B). The model itself is left as it is."""

    def __init__(self, model: PeftModel):
        base = model.get_base_model()
        adapted = {f"{name}.weight": module for name, module in base.named_modules() if isinstance(module, LoraLinear)}
        self.parts = {
            plain: (tensor, adapted.get(plain))
            for name, tensor in base.state_dict().items()
            if ".lora_" not in name
            for plain in [name.replace(".base_layer.", ".")]
        }

    def __getitem__(self, name: str) -> torch.Tensor:
        tensor, module = self.parts[name]
        return (tensor if module is None else tensor + module.get_delta_weight(module.active_adapters[0])).detach()

    def __iter__(self) -> Iterator[str]:
        return iter(self.parts)

    def __len__(self) -> int:
        return len(self.parts)


def merged_state_dict(model: PeftModel) -> dict[str, torch.Tensor]:
    """Every merged weight at once (a checkpoint's model directory)."""
    return dict(Merged(model))


class MergedWeights:
    """What an engine's `sync_weights` reads (`state_dict()`) for a LoRA policy: the merged weights, merged as read."""

    def __init__(self, model: PeftModel):
        self.model = model

    def state_dict(self) -> Merged:
        return Merged(self.model)
