"""Ranks under torchrun: who this process is, one value for all ranks, and the process group around a command.

torchrun starts one process per rank and tells each, through the environment, who it is (RANK,
LOCAL_RANK, WORLD_SIZE) and where to meet (MASTER_ADDR, MASTER_PORT). Launched any other way,
every helper here answers as the one and only process (rank 0 of 1) and training runs as usual.
The loop (`components.training.loop`) uses these helpers to shard batches, wrap the model in DDP,
and let the main process alone validate, log and write.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


def world() -> tuple[int, int]:
    """(rank, world size) of this process: (0, 1) unless torch.distributed was initialised (torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main_process() -> bool:
    return world()[0] == 0


def from_main(value: T) -> T:
    """The main process's `value`, on every rank (one decision for all); `value` itself in one process."""
    if world()[1] == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def from_every_rank(value: T) -> list[T]:
    """Every rank's `value`, in rank order, on every rank; [value] in one process."""
    size = world()[1]
    if size == 1:
        return [value]
    values: list = [None] * size
    dist.all_gather_object(values, value)
    return values


def training_device(name: str) -> torch.device:
    """The device `name` (auto | cpu | cuda) means here: under torchrun, rank's own GPU (LOCAL_RANK)."""
    if name == "cpu" or (name == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError("device: cuda was asked for but torch sees no CUDA GPU; use device: auto or cpu")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))


def launched_by_torchrun() -> bool:
    """Whether torchrun started this process as one of several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


@contextmanager
def process_group(device: str) -> Iterator[bool]:
    """Join torchrun's process group for the block: NCCL when this rank trains on its GPU (`device`
    auto or cuda, as in `pretrain.device`), Gloo on the CPU. Yields whether this is the main process.
    """
    if not launched_by_torchrun() or dist.is_initialized():
        yield is_main_process()
        return
    target = training_device(device)
    if target.type == "cuda":
        # Object collectives (validation metrics, checkpoints) travel through the current device.
        torch.cuda.set_device(target)
        dist.init_process_group("nccl", device_id=target)
    else:
        dist.init_process_group("gloo")
    try:
        yield is_main_process()
    finally:
        dist.destroy_process_group()
