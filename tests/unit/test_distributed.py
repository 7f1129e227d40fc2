"""Data-parallel gradient averaging over a real two-process gloo group (no Ray)."""

from __future__ import annotations

import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp
from torch import nn

from wm_ray.models.common import Optimizer
from wm_ray.models.common import distributed as dist_utils


class Agent:
    """Stands in for an agent: ``nn.Module`` attributes are what the helpers look at."""

    def __init__(self, seed: int) -> None:
        torch.manual_seed(seed)
        self.net = nn.Sequential(
            nn.Linear(4, 8), nn.BatchNorm1d(8, affine=False), nn.Tanh(), nn.Linear(8, 1)
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rank(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    agent = Agent(seed=rank)  # different initial weights on purpose
    dist_utils.broadcast_modules(agent)
    owed = dist_utils.broadcast_floats([float(10 + rank), 2.5], agent)
    opt = Optimizer(agent.net.parameters(), lr=1e-2, clip=1.0)
    data = torch.Generator().manual_seed(100 + rank)  # each rank its own batch
    for _ in range(3):
        x = torch.randn(16, 4, generator=data)
        opt.step(agent.net(x).pow(2).mean())
        dist_utils.average_buffers(agent.net)  # each rank's batch statistics differ
    params = [p.detach().clone() for _, p in dist_utils.named_parameters(agent)]
    buffers = [b.clone() for b in agent.net.buffers()]
    torch.save({"params": params, "owed": owed, "buffers": buffers}, Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_ranks_with_different_batches_keep_identical_weights(tmp_path: Path) -> None:
    mp.start_processes(
        _rank, args=(_free_port(), str(tmp_path)), nprocs=2, start_method="spawn", join=True
    )
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert r0["owed"] == r1["owed"] == [10.0, 2.5], "rank 0's values reach every rank"
    for a, b in zip(r0["params"], r1["params"], strict=True):
        assert torch.equal(a, b), "averaged gradients must keep the ranks identical"
    for a, b in zip(r0["buffers"], r1["buffers"], strict=True):
        assert torch.equal(a, b), "averaged running statistics must keep the ranks identical"
    assert r0["buffers"][0].abs().sum() > 0, "the running mean moved from its start"
    # ... and the update is the average one, not a copy of rank 0's own: a single process
    # training on rank 0's batches alone ends elsewhere.
    solo = Agent(seed=0)
    opt = Optimizer(solo.net.parameters(), lr=1e-2, clip=1.0)
    data = torch.Generator().manual_seed(100)
    for _ in range(3):
        opt.step(solo.net(torch.randn(16, 4, generator=data)).pow(2).mean())
    assert not all(
        torch.equal(a, b.detach()) for a, b in zip(r0["params"], solo.net.parameters(), strict=True)
    )


def test_without_a_group_the_helpers_are_no_ops() -> None:
    agent = Agent(seed=0)
    assert dist_utils.world_size() == 1
    before = [p.detach().clone() for p in agent.net.parameters()]
    dist_utils.broadcast_modules(agent)
    assert dist_utils.broadcast_floats([1.0, 2.0], agent) == [1.0, 2.0]
    assert all(torch.equal(a, b) for a, b in zip(before, agent.net.parameters(), strict=True))


def _returns(step: int) -> torch.Tensor:
    """A (8, 15) batch of returns whose halves differ: per-half percentiles are not global."""
    gen = torch.Generator().manual_seed(step)
    low = torch.randn(4, 15, generator=gen)
    high = 50.0 + 20.0 * torch.randn(4, 15, generator=gen)
    return torch.cat([low, high])


def _normalizer_rank(rank: int, port: int, out: str) -> None:
    from wm_ray.models.common import ReturnNormalizer

    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    norm = ReturnNormalizer(decay=0.5)
    for step in range(3):
        norm.update(_returns(step).chunk(2)[rank])  # each learner sees its B / L sequences
    torch.save({"low": norm.low, "high": norm.high, "scale": norm.scale}, Path(out) / f"n{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_learners_keep_the_return_scale_of_one_learner_on_the_global_batch(
    tmp_path: Path,
) -> None:
    from wm_ray.models.common import ReturnNormalizer

    mp.start_processes(
        _normalizer_rank,
        args=(_free_port(), str(tmp_path)),
        nprocs=2,
        start_method="spawn",
        join=True,
    )
    ranks = [torch.load(tmp_path / f"n{r}.pt") for r in range(2)]
    one = ReturnNormalizer(decay=0.5)
    for step in range(3):
        one.update(_returns(step))
    for got in ranks:
        assert torch.equal(got["low"], one.low) and torch.equal(got["high"], one.high)
        assert torch.equal(got["scale"], one.scale)
    # per-rank percentiles (what each learner would take from its own share) differ widely
    alone = ReturnNormalizer(decay=0.5)
    for step in range(3):
        alone.update(_returns(step).chunk(2)[0])
    assert float(alone.scale) < 0.5 * float(one.scale)
