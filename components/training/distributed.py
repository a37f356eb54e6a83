"""The torchrun process group around a training command: joined on the way in, left on the way out.

torchrun starts one process per rank and tells each, through the environment, who it is (RANK,
LOCAL_RANK, WORLD_SIZE) and where to meet (MASTER_ADDR, MASTER_PORT). Launched any other way,
nothing happens here and training runs in one process as usual. Everything rank-aware in
training itself (sharding, DDP, who validates and writes) lives in `components.training.loop`.
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist

from components.training.loop import is_main_process, training_device


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
