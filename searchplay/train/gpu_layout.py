"""Which Ray worker sits on which GPU, one layout for the memory plan and for the placement group that makes Ray
keep to it; and the route the weights take from it (`trainer.weight_sync`).

Left to itself, Ray packs fractional GPU requests onto GPUs in the order actors are created, so with
`gpus_per_worker = 0.5` two rollout workers may share one GPU and two learner ranks another, where NCCL refuses
two ranks of one group. The layout puts learner rank i and rollout worker i side by side (as many workers to a
GPU as `gpus_per_worker` allows) and the Ray backend reserves one placement-group bundle per GPU of it.
"""

from __future__ import annotations

import math
from typing import Literal

from searchplay.config import ConfigError

Worker = tuple[Literal["learner", "rollout"], int]


class LayoutError(ValueError):
    """A layout that would put two learner ranks on one GPU."""


def workers_per_gpu(gpus_per_worker: float) -> int:
    """How many workers share a GPU: those whose shares fit in one (1 when a worker takes a GPU or more)."""
    return max(1, math.floor(1 / gpus_per_worker + 1e-9))


def gpu_layout(learner_workers: int, rollout_workers: int, gpus_per_worker: float) -> list[list[Worker]]:
    """The workers of each GPU (or each worker's own GPUs when it takes one or more): learner rank i and rollout
    worker i in turn, `workers_per_gpu` to a GPU."""
    pairs = max(learner_workers, rollout_workers)
    order: list[Worker] = []
    for i in range(pairs):
        if i < learner_workers:
            order.append(("learner", i))
        if i < rollout_workers:
            order.append(("rollout", i))
    per_gpu = workers_per_gpu(gpus_per_worker)
    layout = [order[start : start + per_gpu] for start in range(0, len(order), per_gpu)]
    for k, gpu in enumerate(layout):
        ranks = [i for kind, i in gpu if kind == "learner"]
        if len(ranks) > 1:
            raise LayoutError(
                f"learner ranks {ranks} would share GPU {k} ({learner_workers} learner and {rollout_workers} rollout "
                f"workers at trainer.gpus_per_worker = {gpus_per_worker:g}): NCCL refuses two ranks of a group on one "
                "GPU; give as many rollout workers as learner ranks, or fewer workers to a GPU"
            )
    return layout


def colocated(layout: list[list[Worker]]) -> bool:
    """Whether every rollout worker shares its GPU with the learner rank of the same index (weights by CUDA IPC)."""
    return all(("learner", i) in gpu for gpu in layout for kind, i in gpu if kind == "rollout")


def shares_a_gpu(layout: list[list[Worker]]) -> bool:
    """Whether any GPU holds more than one worker."""
    return any(len(gpu) > 1 for gpu in layout)


def weight_route(setting: str, on_gpu: bool, learner_workers: int, rollout_workers: int, gpus_per_worker: float) -> str:
    """trainer.weight_sync resolved to "object_store", "broadcast" or "ipc", refused by name where it cannot work.
    On GPUs, `auto` takes the route that keeps the weights on the GPUs: each rollout worker beside its learner rank
    gets them by CUDA IPC (`ipc`); rollout workers on GPUs of their own get them broadcast over NCCL, which refuses
    two members on one GPU (`broadcast`); any other layout goes through host memory (`object_store`). On CPUs
    `auto` is the object store; the other two run there too (gloo, bytes), which is how they are tested."""
    layout = gpu_layout(learner_workers, rollout_workers, gpus_per_worker) if on_gpu else []
    if setting == "auto":
        if not on_gpu:
            return "object_store"
        if not shares_a_gpu(layout):
            return "broadcast"
        return "ipc" if colocated(layout) else "object_store"
    if setting == "broadcast" and shares_a_gpu(layout):
        raise ConfigError(
            f"trainer.weight_sync = 'broadcast' with trainer.gpus_per_worker = {gpus_per_worker:g}: workers share GPUs, "
            "and NCCL refuses two members of a group on one GPU; use weight_sync = 'ipc' or 'auto', or "
            "gpus_per_worker >= 1"
        )
    if setting == "ipc" and (rollout_workers > learner_workers or (on_gpu and not colocated(layout))):
        raise ConfigError(
            f"trainer.weight_sync = 'ipc' with {learner_workers} learner and {rollout_workers} rollout workers at "
            f"trainer.gpus_per_worker = {gpus_per_worker:g}: each rollout worker takes its weights from the learner rank "
            "of its index on its GPU, so it needs no more rollout workers than learner ranks and, on GPUs, two "
            "workers to a GPU (gpus_per_worker = 0.5); use 'auto'"
        )
    return setting
