"""The compiled Dreamer update (``run.compile=true``) against the eager one, which stays the
reference: the same random numbers drawn, the same losses, gradients and weights after several
updates, a checkpoint that resumes a compiled learner exactly; and on a GPU the CUDA update
(eager and captured as CUDA graphs) against the CPU update with device-independent draws
(``run.cpu_rng``). The GPU tests skip without CUDA.

Tolerances are relative to the magnitude compared: the compiled graphs fuse and reorder float
sums, so results agree to float rounding, not bit for bit.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch

from wm_ray.models.common.noise import Tape, rand, randn
from wm_ray.models.common.testing import assert_close_to_scale
from wm_ray.models.dreamer import DreamerAgent
from wm_ray.models.dreamer.compiled import CompiledUpdate
from wm_ray.models.dreamer.testing import (
    DEBUG,
    fake_batch,
    image_space,
    root_config,
    vector_space,
)

IMAGE_VECTOR = gym.spaces.Dict({**image_space(16).spaces, **vector_space(3).spaces})
DISCRETE = gym.spaces.Discrete(3)
CONTINUOUS = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
B, T, H = 3, 4, 3
"""A small batch and horizon: compile time grows with the unrolled steps."""

COMPARED = (
    "train/loss/world_model/total",
    "train/loss/world_model/image",
    "train/loss/world_model/vector",
    "train/loss/world_model/dyn",
    "train/loss/world_model/reward",
    "train/loss/actor/total",
    "train/loss/critic/total",
    "train/grad_norm/world_model",
    "train/grad_norm/critic",
    "train/grad_norm/actor",
    "train/actor/return_scale",
)


def _agent(
    obs: gym.spaces.Dict = IMAGE_VECTOR,
    act: gym.Space = DISCRETE,
    device: str = "cpu",
    dreamer: dict[str, Any] | None = None,
    **run: Any,
) -> DreamerAgent:
    dreamer_cfg = dataclasses.replace(DEBUG, ac=dataclasses.replace(DEBUG.ac, horizon=H))
    for key, value in (dreamer or {}).items():
        section, name = key.split(".")
        part = dataclasses.replace(getattr(dreamer_cfg, section), **{name: value})
        dreamer_cfg = dataclasses.replace(dreamer_cfg, **{section: part})
    config = root_config(dreamer_cfg, seed=0, device=device)
    config = dataclasses.replace(config, run=dataclasses.replace(config.run, **run))
    return DreamerAgent(obs, act, config)


def _batches(obs: gym.spaces.Dict, act: gym.Space, count: int) -> list[dict[str, np.ndarray]]:
    batches = [fake_batch(obs, act, B, T, seed=10 + i, first_prob=0.2) for i in range(count)]
    for batch in batches:
        batch["is_first"][:, 0] = True  # as replay gives them: each sequence starts anew
    return batches


def _close(a: float, b: float, rel: float) -> bool:
    """Equal to ``rel`` of the larger magnitude (with a floor for values near zero)."""
    return abs(a - b) <= rel * max(abs(a), abs(b), 1e-3)


CHAOTIC = ("train/grad_norm/actor",)
"""Chaotic in float rounding with dynamics backprop (see :func:`_assert_same_updates`)."""
FIRST_ONLY = ("train/loss/actor/total", "train/loss/critic/total", "train/grad_norm/critic")
"""Compared at the first update only. The reward and critic heads start at zero logits, whose
two-hot mean is exactly 0; after one update the logits are small and nearly uniform, and the
mean ``sum_i p_i v_i`` over bins up to ``symexp(20) = 4.85e8`` then moves by up to ~0.2 with
the last bit of a logit (another thread count, BLAS kernel or product shape). The imagined
rewards and returns of the second update are that rounding, and these read them (measured: a
mean imagined reward of 0.0095 vs -0.0003 between an eager update at 1 and 2 threads)."""


def _assert_same_updates(
    reference: DreamerAgent, other: DreamerAgent, batches: list[dict[str, np.ndarray]], rel: float
) -> None:
    for i, batch in enumerate(batches):
        a = reference.train(batch, None)[1]
        b = other.train(batch, None)[1]
        assert a.keys() == b.keys()
        for key in (k for k in COMPARED if k in a):
            if (reference.dynamics and key in CHAOTIC) or (i > 0 and key in FIRST_ONLY):
                continue
            assert _close(a[key], b[key], rel), f"update {i}: {key} {a[key]} vs {b[key]}"
    # the same draws in the same order: both generators end in the same state
    assert torch.equal(reference.gen.get_state(), other.gen.get_state())
    ref_params = dict(reference.nets.named_parameters())
    # The actor and the critic learn, from the second update on, from imagined rewards that
    # are rounding (FIRST_ONLY); with backprop through imagined dynamics the actor's gradient
    # is chaotic in its inputs besides: a relative change of 1e-7 in the start states moves
    # it by several percent (straight-through latents whose sampled class flips). Their
    # weights are held to Adam's bound instead (each step moves a weight by at most ~lr); the
    # world model's are exact.
    opt = reference.cfg.opt
    bounds = {"actor.": opt.actor_lr, "critic.": opt.critic_lr, "slow_critic.": opt.critic_lr}
    for name, param in other.nets.named_parameters():
        ref = ref_params[name].detach().cpu()
        lr = next((lr for prefix, lr in bounds.items() if name.startswith(prefix)), None)
        if lr is not None:
            bound = 2.0 * lr * len(batches) * 1.05
            diff = float((param.detach().cpu() - ref).abs().max())
            assert diff <= bound, f"{name}: weights differ by {diff} > {bound}"
        else:
            assert_close_to_scale(param.cpu(), ref, rel, what=name)


def test_compiled_update_matches_the_eager_update_over_several_updates() -> None:
    """Inductor on the CPU: losses, gradient norms, the return scale and every weight after
    three updates as in eager mode, and exactly the same random numbers drawn. (Vector
    observations: inductor calls the same conv kernels as eager mode, and compiling them here
    would cost CI a minute; the aot_eager tests below cover the image graphs.)"""
    obs = vector_space(3)
    eager, compiled = _agent(obs), _agent(obs, compile=True)
    assert compiled.compiled is not None and eager.compiled is None
    _assert_same_updates(eager, compiled, _batches(obs, DISCRETE, 3), rel=2e-3)
    assert compiled.updates == eager.updates == 3
    assert compiled.actor_opt.steps == eager.actor_opt.steps == 3


def test_the_compile_benchs_regional_variant_computes_the_eager_update() -> None:
    """``benchmarks/compile_bench.py`` compares compiling per-step regions (the RSSM's step
    functions and every network module) with the whole-update graphs; the comparison means
    something only if that variant trains exactly as eager mode does (``aot_eager``: the same
    regions, run op by op)."""
    from benchmarks.compile_bench import compile_regions

    obs = vector_space(3)
    eager, regional = _agent(obs), _agent(obs)
    compile_regions(regional, backend="aot_eager")
    _assert_same_updates(eager, regional, _batches(obs, DISCRETE, 2), rel=2e-3)


@pytest.mark.parametrize(
    ("obs", "act", "dreamer"),
    [
        (IMAGE_VECTOR, DISCRETE, {}),  # conv encoder and decoder
        (vector_space(3), CONTINUOUS, {}),  # dynamics backprop: the actor loss reaches the critic
        (vector_space(3), DISCRETE, {"ac.actor_grad": "reinforce"}),  # one backward for both
        (vector_space(3), CONTINUOUS, {"rssm.latent": "gaussian", "ac.slow_critic_target": True}),
    ],
    ids=["image-dynamics", "continuous-dynamics", "reinforce", "gaussian-slow-target"],
)
def test_compiled_graphs_match_eager_for_each_actor_gradient_and_latent(
    obs: gym.spaces.Dict, act: gym.Space, dreamer: dict[str, Any]
) -> None:
    """The graph logic (draws from the tape, the backward passes, the optimizer steps) for
    each branch, compiled without inductor's code generation (``aot_eager``: the same graphs
    run op by op), so the comparison is tight and the compile quick."""
    eager, compiled = _agent(obs, act, dreamer=dreamer), _agent(obs, act, dreamer=dreamer)
    compiled.compiled = CompiledUpdate(compiled, backend="aot_eager")
    _assert_same_updates(eager, compiled, _batches(obs, act, 2), rel=1e-4)


def test_a_compiled_learner_resumes_from_its_checkpoint_exactly(tmp_path: Path) -> None:
    """Weights, optimizer states, the return normalizer, the slow critic and the generator
    come back: the resumed learner's next update is the one the original would have made."""
    batches = _batches(vector_space(3), DISCRETE, 2)
    original = _agent(vector_space(3))
    original.compiled = CompiledUpdate(original, backend="aot_eager")
    original.train(batches[0], None)
    original.save(tmp_path / "ckpt")
    resumed = _agent(vector_space(3))
    resumed.compiled = CompiledUpdate(resumed, backend="aot_eager")
    resumed.load(tmp_path / "ckpt")
    assert torch.equal(resumed.retnorm.low, original.retnorm.low)
    a, b = original.train(batches[1], None)[1], resumed.train(batches[1], None)[1]
    for key in (k for k in COMPARED if k in a):
        assert a[key] == b[key], key


def _compiled_rank(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    from wm_ray.models.common import distributed as dist_utils

    agent = _agent(vector_space(3), dreamer={"ac.actor_grad": "reinforce"})
    dist_utils.broadcast_modules(agent)
    agent.compiled = CompiledUpdate(agent, backend="aot_eager")
    # each learner its own share of the batch (and its own draws): only the averaged
    # gradients and the global return percentiles keep them together
    agent.gen.manual_seed(rank)
    batches = _batches(vector_space(3), DISCRETE, 4)
    for i in range(2):
        agent.train(batches[2 * i + rank], None)
    params = {n: p.detach().clone() for n, p in agent.nets.named_parameters()}
    torch.save({"params": params, "high": agent.retnorm.high}, Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_compiled_learners_of_one_group_keep_identical_weights(tmp_path: Path) -> None:
    """Two compiled learners in a gloo group, different batches: gradients are averaged (by
    the optimizers, outside the graphs) and the return scale is that of the global batch
    (an all-gather the graph reaches), so both end with the same weights and scale."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    mp.start_processes(
        _compiled_rank, args=(port, str(tmp_path)), nprocs=2, start_method="spawn", join=True
    )
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert torch.equal(r0["high"], r1["high"])
    for name, value in r0["params"].items():
        assert torch.equal(value, r1["params"][name]), name


def test_the_random_tape_hands_out_its_plan_in_order_and_refuses_a_wrong_one() -> None:
    plan = [("rand", (2, 1)), ("randn", (2, 3)), ("rand", (2, 1))]
    tape = Tape.draw(plan, torch.Generator().manual_seed(0), "cpu")
    # two generator calls: the uniform numbers, then the normal ones
    gen = torch.Generator().manual_seed(0)
    uniform, normal = torch.rand(4, generator=gen), torch.randn(6, generator=gen)
    like = torch.zeros(1)
    assert torch.equal(rand((2, 1), like, tape), uniform[:2].view(2, 1))
    assert torch.equal(randn((2, 3), like, tape), normal.view(2, 3))
    assert not tape.used_up
    with pytest.raises(RuntimeError, match=r"random draw 2 of the tape is rand \(2, 1\)"):
        randn((2, 1), like, tape)
    tape = Tape.draw(plan, torch.Generator().manual_seed(0), "cpu")
    for kind, shape in plan:
        (rand if kind == "rand" else randn)(shape, like, tape)
    assert tape.used_up
    with pytest.raises(RuntimeError, match="used up"):
        rand((2, 1), like, tape)


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@pytest.fixture
def exact_cuda() -> Any:
    """fp32 matmuls and convolutions on the GPU (no TF32), restored afterwards."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


@CUDA
@pytest.mark.parametrize(
    "run",
    [{}, {"compile": True}, {"compile": True, "compile_mode": "reduce-overhead"}],
    ids=["eager", "compiled", "captured"],
)
def test_cuda_learner_updates_match_the_cpu_learner(run: dict[str, Any], exact_cuda: Any) -> None:
    """With draws from a CPU generator (``run.cpu_rng``) a CUDA learner samples what the CPU
    learner samples: eager, compiled and captured CUDA updates match the CPU updates over
    several updates (CUDA graphs are recorded after the first calls) to float rounding."""
    cpu = _agent(cpu_rng=True)
    gpu = _agent(device="cuda", cpu_rng=True, **run)
    _assert_same_updates(cpu, gpu, _batches(IMAGE_VECTOR, DISCRETE, 3), rel=2e-3)


@CUDA
def test_bf16_cuda_learner_stays_close_to_the_fp32_cpu_learner(exact_cuda: Any) -> None:
    cpu = _agent(cpu_rng=True)
    gpu = _agent(device="cuda", cpu_rng=True, precision="bf16", channels_last=True, compile=True)
    for batch in _batches(IMAGE_VECTOR, DISCRETE, 3):
        a, b = cpu.train(batch, None)[1], gpu.train(batch, None)[1]
        for key in ("train/loss/world_model/image", "train/loss/world_model/vector"):
            assert _close(a[key], b[key], 0.05), f"{key} {a[key]} vs {b[key]}"


@CUDA
def test_captured_learner_keeps_its_state_right_over_many_replays(
    tmp_path: Path, exact_cuda: Any
) -> None:
    """Ten replays of the captured graphs against the eager CUDA learner: optimizer steps,
    the return normalizer and the slow critic advance as in eager mode; the captured learner
    then checkpoints and resumes into a new captured learner that goes on identically."""
    # REINFORCE: a well-conditioned actor gradient, so ten updates stay comparable
    reinforce = {"ac.actor_grad": "reinforce"}
    eager = _agent(device="cuda", dreamer=reinforce)
    captured = _agent(
        device="cuda", dreamer=reinforce, compile=True, compile_mode="reduce-overhead"
    )
    batches = _batches(IMAGE_VECTOR, DISCRETE, 11)
    _assert_same_updates(eager, captured, batches[:10], rel=5e-3)
    assert torch.allclose(eager.retnorm.high, captured.retnorm.high, rtol=5e-3)
    assert captured.model_opt.steps == 10
    captured.save(tmp_path / "ckpt")
    resumed = _agent(device="cuda", dreamer=reinforce, compile=True, compile_mode="reduce-overhead")
    resumed.load(tmp_path / "ckpt")
    a, b = captured.train(batches[10], None)[1], resumed.train(batches[10], None)[1]
    for key in (k for k in COMPARED if k in a):
        assert _close(a[key], b[key], 1e-4), key
