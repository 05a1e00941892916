"""FSDP2 sharding of the learner (`learner.sharding`): each rank of a learner group holds 1/N of the
weights, gradients and AdamW state instead of a full copy (docs/scaling.md).

Units: every decoder layer (the model's `_no_split_modules` classes) is one unit; the root is
`TrainedLogits`, a module of ours whose forward is the Learner's whole forward (base model, then the
output projection at the trained positions only). The root therefore gathers the embedding, the final
norm and the output projection, tied to the embedding or not, around one call; calling
`model.base_model` and the output embedding separately, as the unsharded learner does, would mix
gathered and sharded copies of a tied weight.

Every forward and backward of a sharded model is a collective: each rank must run the same number of
them, so a rank with a smaller share of a mini-batch runs empty micro-batches (`pad_chunks`; their
loss is zero), as verl and OpenRLHF do. Gradients are summed over the ranks (divide factor 1): the
Learner normalises each rank's loss by the counts of the whole mini-batch, as in data_parallel.py.
Reductions use plain sums (gloo has no PREMUL_SUM). With bf16 the units are gathered in bf16 and
computed without autocast (MixedPrecisionPolicy); master shards, gradients and AdamW state stay fp32.
Checkpoints and weight sync gather the full state on every rank together (`full_state_dict`), one
parameter at a time onto the CPU.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import CPUOffloadPolicy, FSDPModule, MixedPrecisionPolicy, fully_shard

ROOT_PREFIX = "model."  # TrainedLogits holds the model as `self.model`


class TrainedLogits(nn.Module):
    """The Learner's forward as one module: logits / temperature at the positions `where` (mask of the
    targets, batch x (length - 1)), through the base model and the output projection. A LoRA policy (PEFT)
    runs its causal model, adapters included; `adapters_off`: without them (the LoRA policy's reference)."""

    def __init__(self, model: Any, adapters_off: bool = False):
        super().__init__()
        self.model, self.adapters_off = model, adapters_off

    def forward(self, ids: torch.Tensor, attention: torch.Tensor, where: torch.Tensor, temperature: float) -> torch.Tensor:
        causal = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        with self.model.disable_adapter() if self.adapters_off else contextlib.nullcontext():
            hidden = causal.base_model(input_ids=ids, attention_mask=attention, use_cache=False).last_hidden_state
            return causal.get_output_embeddings()(hidden[:, :-1][where]).float() / temperature


def layer_classes(model: Any) -> set[str]:
    names = set(getattr(model, "_no_split_modules", None) or [])
    if not names:
        raise ValueError(f"{type(model).__name__} names no decoder layer class (_no_split_modules): cannot shard it")
    return names


def shard(model: Any, device: torch.device, offload: bool = False, bf16: bool = False) -> TrainedLogits:
    """Wrap `model` in place (its parameters become DTensor shards on `device`) and return the root to call.
    The weights are rank 0's: another rank may pass its model built on the meta device (`load_model(empty=True)`,
    no memory taken) and its shards are filled from rank 0's, one tensor at a time (verl's way); every rank loading
    the whole policy and reference first held 2 full fp32 copies per rank at start-up.
    `offload`: parameters, gradients and optimizer state live on the CPU between uses. `bf16`: each unit is
    gathered and computed in bf16 and its gradients reduced in fp32 (FSDP2's MixedPrecisionPolicy, as verl does),
    in place of autocast, which gathers fp32 weights and keeps a bf16 copy of each alive through the forward."""
    rank0 = dist.get_rank() == 0
    if rank0 and any(p.is_meta for p in model.parameters()):
        raise ValueError("rank 0 of a sharded learner must load the weights: the other ranks' shards come from its model")
    full = {ROOT_PREFIX + k: v.detach() for k, v in model.state_dict().items()} if rank0 else {}
    # pinned host memory speeds copies to a GPU; without an accelerator there is none to pin for (and torch refuses)
    kwargs: dict[str, Any] = {"offload_policy": CPUOffloadPolicy(pin_memory=torch.cuda.is_available())} if offload else {}
    if bf16:
        kwargs["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    classes = layer_classes(model)
    units: list[Any] = [m for m in model.modules() if type(m).__name__ in classes]
    if not units:
        raise ValueError(f"no module of {type(model).__name__} is one of {sorted(classes)}: cannot shard it")
    for unit in units:
        fully_shard(unit, **kwargs)
    root = TrainedLogits(model)
    fully_shard(root, **kwargs)
    for unit in [*units, root]:
        assert isinstance(unit, FSDPModule)
        unit.set_gradient_divide_factor(1.0)  # a sum over the ranks, as the loss normalisation expects
        unit.set_force_sum_reduction_for_comms(True)
    if any(t.is_meta for t in [*root.parameters(), *root.buffers()]):
        root.to_empty(device=device)  # memory for this rank's shards and the (unsharded) buffers, filled below
    set_model_state_dict(root, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    for buffer in root.buffers():  # not in a state dict (rotary frequencies): rank 0's too
        dist.broadcast(buffer, src=0)
    return root


def full_state_dict(root: nn.Module) -> dict[str, torch.Tensor]:
    """The full weights of a sharded root, by the wrapped model's parameter names, on the CPU of rank 0
    (other ranks get an empty dict). A collective: every rank calls it."""
    state: dict[str, Any] = get_model_state_dict(root, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return {k.removeprefix(ROOT_PREFIX): v for k, v in state.items()}


def full_optimizer_state(root: nn.Module, optimizer: torch.optim.Optimizer, names: list[str]) -> dict[str, Any]:
    """The optimizer's full state in one process's format (parameters numbered in `names` order, the
    trained parameters of the unwrapped model), on rank 0; a collective."""
    full: Any = get_optimizer_state_dict(root, optimizer, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not full:
        return {}
    index = {ROOT_PREFIX + n: i for i, n in enumerate(names)}
    groups = [{**g, "params": [index[p] for p in g["params"]]} for g in full["param_groups"]]
    return {"state": {index[k]: v for k, v in full["state"].items()}, "param_groups": groups}


def load_full_optimizer_state(root: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], names: list[str]) -> None:
    """One process's optimizer state into the optimizer of a sharded root; every rank passes the same dict."""
    fqn = [ROOT_PREFIX + n for n in names]
    groups = [{**g, "params": [fqn[i] for i in g["params"]]} for g in state["param_groups"]]
    full: Any = {"state": {fqn[i]: v for i, v in state["state"].items()}, "param_groups": groups}
    set_optimizer_state_dict(root, optimizer, full, options=StateDictOptions(full_state_dict=True))


def save_optimizer_shards(root: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """Each rank writes its part of the optimizer state into `folder` (torch.distributed.checkpoint); a collective.
    Nothing is gathered: at 7B the whole state is 61 GB, which rank 0 wrote alone and every rank read on resume."""
    dcp.save({"optimizer": get_optimizer_state_dict(root, optimizer)}, checkpoint_id=str(folder))


def load_optimizer_shards(root: nn.Module, optimizer: torch.optim.Optimizer, folder: Path) -> None:
    """The optimizer state of `save_optimizer_shards` into `optimizer`, resharded for this group, whatever the number
    of ranks that wrote it (one process too: `root` is then the unsharded TrainedLogits, with the same names)."""
    state = {"optimizer": get_optimizer_state_dict(root, optimizer)}
    dcp.load(state, checkpoint_id=str(folder), no_dist=not dist.is_initialized())
    set_optimizer_state_dict(root, optimizer, state["optimizer"])


def pad_chunks(chunks: list[list[int] | None], counts: int) -> list[list[int] | None]:
    """`chunks` followed by empty micro-batches (None) up to `counts`, the largest count over the ranks."""
    return [*chunks, *([None] * (counts - len(chunks)))]
