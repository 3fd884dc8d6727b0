"""Datasets of atomic graphs, samplers that shard them across processes, and the DataModule.

mlpot brings its own samplers instead of Lightning's DistributedSampler (the Trainer is built
with ``use_distributed_sampler=False``): the training order depends only on the seed and the
epoch, so a resumed run sees the same batches as an uninterrupted one, and validation shards
hold each structure exactly once, so metrics summed over processes equal those of one process.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from mlpot.data.graph import AtomicGraph, collate, structure_to_graph
from mlpot.data.labels import Structure


class GraphDataset(Dataset):
    """Atomic graphs built once, with their neighbour lists, from labelled structures."""

    def __init__(self, structures: Sequence[Structure], cutoff: float):
        self.structures = list(structures)
        self.graphs = [structure_to_graph(structure, cutoff) for structure in self.structures]

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, index: int) -> AtomicGraph:
        return self.graphs[index]


class EpochShuffleSampler(Sampler[int]):
    """Shuffled indices that depend only on (seed, epoch), split into one shard per process.

    Every shard has the same length, so that all DDP processes take the same number of steps;
    the last indices of the permutation are repeated to fill the shards when the dataset size
    is not a multiple of the number of processes.
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world_size: int = 1):
        self.size = size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0
        self.shard_size = math.ceil(size / world_size)

    def set_epoch(self, epoch: int) -> None:
        """Select the permutation of ``epoch``; Lightning calls this at the start of each epoch."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.size, generator=generator).tolist()
        padding = self.shard_size * self.world_size - self.size
        order += order[:padding]
        return iter(order[self.rank :: self.world_size])

    def __len__(self) -> int:
        return self.shard_size


class ShardSampler(Sampler[int]):
    """Indices in order, split into contiguous shards that together hold each index exactly once."""

    def __init__(self, size: int, rank: int = 0, world_size: int = 1):
        bounds = np.linspace(0, size, world_size + 1).round().astype(int)
        self.indices = list(range(bounds[rank], bounds[rank + 1]))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def split_indices(size: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(size)`` into (train, validation) with a seeded permutation.

    The validation part has round(fraction * size) entries, at least one while ``size`` > 1.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"valid_fraction must be between 0 and 1, got {fraction}")
    count = min(max(1, round(fraction * size)), size - 1)
    order = np.random.default_rng(seed).permutation(size)
    return np.sort(order[count:]), np.sort(order[:count])


class GraphDataModule(pl.LightningDataModule):
    """Training, validation and test loaders over graphs built from structure lists."""

    def __init__(
        self,
        train: Sequence[Structure],
        valid: Sequence[Structure],
        test: Sequence[Structure] | None,
        cutoff: float,
        batch_size: int,
        eval_batch_size: int,
        seed: int,
        num_workers: int = 0,
    ):
        super().__init__()
        self.train_set = GraphDataset(train, cutoff)
        self.valid_set = GraphDataset(valid, cutoff)
        self.test_set = GraphDataset(test, cutoff) if test else None
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.num_workers = num_workers

    def _process(self) -> tuple[int, int]:
        trainer = self.trainer
        if trainer is None:
            return 0, 1
        return trainer.global_rank, trainer.world_size

    def _loader(self, dataset: GraphDataset, sampler: Sampler, batch_size: int) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=collate,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        rank, world_size = self._process()
        sampler = EpochShuffleSampler(len(self.train_set), self.seed, rank, world_size)
        return self._loader(self.train_set, sampler, self.batch_size)

    def val_dataloader(self) -> DataLoader:
        rank, world_size = self._process()
        return self._loader(self.valid_set, ShardSampler(len(self.valid_set), rank, world_size), self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        if self.test_set is None:
            raise ValueError("no test set: set test_file")
        rank, world_size = self._process()
        return self._loader(self.test_set, ShardSampler(len(self.test_set), rank, world_size), self.eval_batch_size)
