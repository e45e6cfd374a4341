"""Several processes under torchrun (DDP, NCCL on GPUs, gloo on CPUs), or one process: the same code path."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class Processes:
    """This process's place among the training processes (torchrun's WORLD_SIZE, RANK, LOCAL_RANK)."""

    world: int
    rank: int
    local_rank: int
    device: torch.device

    @classmethod
    def start(cls, device: torch.device) -> "Processes":
        """Join the process group when torchrun started several processes; each GPU process gets its own GPU."""
        world, rank, local_rank = (int(os.environ.get(k, d)) for k, d in (("WORLD_SIZE", 1), ("RANK", 0), ("LOCAL_RANK", 0)))
        if world > 1:
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            device = torch.device(f"cuda:{local_rank}") if device.type == "cuda" else device
        return cls(world, rank, local_rank, device)

    @property
    def main(self) -> bool:
        """The process that writes the run folder."""
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        """The module the loop calls: DDP around `model` (gradients averaged across processes), or `model` itself."""
        if self.world == 1:
            return model
        return DistributedDataParallel(model, device_ids=[self.local_rank] if self.device.type == "cuda" else None)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.world > 1:
            dist.destroy_process_group()
