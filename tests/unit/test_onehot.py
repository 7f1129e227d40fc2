"""The one-hot fast path (``wm_ray.models.common.onehot``): the RSSM's categorical latent read by
gathering weight columns must give the outputs and gradients of the dense product, and a whole
imagination + actor-critic step must not change when it is used."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from wm_ray.models.common import MLP, OneHotInput, ReturnNormalizer, onehot, onehot_matmul
from wm_ray.models.common.testing import assert_close_to_scale
from wm_ray.models.dreamer.config import RSSMConfig
from wm_ray.models.dreamer.losses import actor_critic_losses, imagine
from wm_ray.models.dreamer.networks import State, build_networks
from wm_ray.models.dreamer.testing import DEBUG
from wm_ray.models.rssm import rssm as rssm_module
from wm_ray.models.rssm.latents import sample_onehot_index

GROUPS, CLASSES = 4, 6


@pytest.fixture(autouse=True)
def always_gather(monkeypatch: pytest.MonkeyPatch) -> None:
    """These sizes are far below the size at which products switch to the gather: force it."""
    monkeypatch.setattr(onehot, "GATHER_MIN_MACS", 0)


def _probs(*lead: int, grad: bool = True) -> torch.Tensor:
    logits = torch.randn(*lead, GROUPS, CLASSES, generator=torch.Generator().manual_seed(0))
    return torch.softmax(logits, -1).requires_grad_(grad)


def test_sampled_choice_is_the_class_of_the_one_hot_and_no_grad_skips_straight_through() -> None:
    probs = _probs(3, 5)
    onehot, choice = sample_onehot_index(probs, torch.Generator().manual_seed(1))
    assert choice.shape == (3, 5, GROUPS) and choice.dtype == torch.int64
    assert torch.equal(onehot.detach().argmax(-1), choice)
    assert torch.equal(onehot.detach().sum(-1), torch.ones(3, 5, GROUPS))
    assert onehot.requires_grad  # straight-through to probs
    plain, same = sample_onehot_index(probs.detach(), torch.Generator().manual_seed(1))
    assert not plain.requires_grad and torch.equal(same, choice)
    assert torch.equal(plain, onehot.detach())


@pytest.mark.parametrize("lead", [(7,), (3, 5)])
def test_onehot_matmul_equals_the_dense_product_with_the_same_gradients(lead) -> None:
    probs = _probs(*lead)
    onehot, choice = sample_onehot_index(probs, torch.Generator().manual_seed(2))
    onehot = onehot.flatten(-2)
    weight = torch.randn(9, GROUPS * CLASSES, requires_grad=True)
    upstream = torch.randn(*lead, 9)

    fast = onehot_matmul(onehot, choice, weight)
    g_probs, g_weight = torch.autograd.grad((fast * upstream).sum(), [probs, weight])
    dense = onehot @ weight.t()
    d_probs, d_weight = torch.autograd.grad((dense * upstream).sum(), [probs, weight])

    assert fast.shape == (*lead, 9)
    torch.testing.assert_close(fast, dense)
    torch.testing.assert_close(g_probs, d_probs)  # the straight-through gradient
    torch.testing.assert_close(g_weight, d_weight)
    assert float(g_probs.abs().sum()) > 0


@pytest.mark.parametrize("rows", [4, 4096])
def test_small_products_stay_dense_and_large_ones_gather(
    rows: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(onehot, "GATHER_MIN_MACS", 1 << 20)  # 4 x 24 x 64 below, 4096 above
    choice = torch.randint(0, CLASSES, (rows, GROUPS))
    x = torch.nn.functional.one_hot(choice, CLASSES).float().flatten(-2)
    weight = torch.randn(64, GROUPS * CLASSES)
    calls = []
    real = onehot._OneHotMatmul.apply
    monkeypatch.setattr(onehot._OneHotMatmul, "apply", lambda *a: calls.append(1) or real(*a))
    torch.testing.assert_close(onehot_matmul(x, choice, weight), x @ weight.t())
    assert bool(calls) == (rows == 4096)


def test_onehot_matmul_refuses_a_size_that_is_not_groups_times_classes() -> None:
    with pytest.raises(ValueError, match="25 is not a multiple of 4 groups"):
        onehot_matmul(torch.zeros(2, 25), torch.zeros(2, 4, dtype=torch.int64), torch.zeros(3, 25))


@pytest.mark.parametrize("layers", [0, 1, 2])
def test_mlp_reads_a_onehot_input_like_its_dense_tensor(layers: int) -> None:
    torch.manual_seed(0)
    net = MLP(5 + GROUPS * CLASSES, 3, 16, layers)
    onehot, choice = sample_onehot_index(_probs(8, grad=False), torch.Generator().manual_seed(3))
    x = OneHotInput(torch.randn(8, 5), onehot.flatten(-2), choice)
    assert x.shape == (8, 5 + GROUPS * CLASSES)
    fast = net(x)
    (g_fast,) = torch.autograd.grad(fast.square().sum(), [next(net.parameters())])
    dense = net(x.tensor())
    (g_dense,) = torch.autograd.grad(dense.square().sum(), [next(net.parameters())])
    torch.testing.assert_close(fast, dense)
    torch.testing.assert_close(g_fast, g_dense)


@pytest.mark.parametrize("frozen", [True, False])
@pytest.mark.parametrize("kind", ["onehot", "dense"])
def test_a_traced_mlp_on_strided_states_multiplies_folded_rows(kind: str, frozen: bool) -> None:
    """Traced into a graph, an MLP reading strided states (the imagined states after the
    first, ``feat[:, 1:]``) into 255 two-hot logits: with weights that take no gradient,
    torch's matmul would make that a batched product with the weight repeated for every row
    (~1.3x slower than one product); the MLP folds the rows first. The graphs (forward and
    backward) hold no ``bmm``, and the outputs and gradients are those of the eager MLP."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    torch.manual_seed(0)
    net = MLP(5 + GROUPS * CLASSES, 255, 16, 1).requires_grad_(not frozen)
    onehot, choice = sample_onehot_index(_probs(4, 6, grad=False), torch.Generator().manual_seed(3))
    dense = torch.randn(4, 6, 5)
    ops: list[tuple[str, tuple[int, ...]]] = []

    def grab(graph: torch.fx.GraphModule, _: object) -> object:
        for node in graph.graph.nodes:
            if node.op == "call_function":
                val = node.meta["val"]
                ops.append((str(node.target), tuple(getattr(val, "shape", ()))))
        return make_boxed_func(graph.forward)

    def heads(dense: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
        x = OneHotInput(dense, onehot, choice)
        return net(x.map(lambda t: t[:, 1:]) if kind == "onehot" else x.tensor()[:, 1:])

    inputs = [dense.requires_grad_(), onehot.flatten(-2).requires_grad_()]
    wrt = [*inputs, *(p for p in net.parameters() if p.requires_grad)]
    traced = torch.compile(heads, backend=aot_autograd(fw_compiler=grab, bw_compiler=grab))
    out = traced(*inputs)
    grads = torch.autograd.grad(out.square().sum(), wrt)
    torch._dynamo.reset()
    assert out.shape == (4, 5, 255)
    products = [shape for op, shape in ops if op.startswith(("aten.mm", "aten.addmm"))]
    assert not [op for op, _ in ops if "bmm" in op], ops
    assert (20, 255) in products, products  # the output layer: one product over all rows
    expected = heads(*inputs)
    assert_close_to_scale(out, expected, what="outputs")
    want = torch.autograd.grad(expected.square().sum(), wrt)
    for i, (got, ref) in enumerate(zip(grads, want, strict=True)):
        assert_close_to_scale(got, ref, what=f"gradient {i}")


def _strip_choices(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the RSSM forget the classes it samples: every layer then reads the dense one-hot."""
    real = rssm_module.sample_onehot_index

    def dense_only(probs, generator=None):
        onehot, _ = real(probs, generator)
        return onehot, None

    monkeypatch.setattr(rssm_module, "sample_onehot_index", dense_only)


@pytest.mark.parametrize("continuous", [False, True])
def test_imagination_and_actor_critic_losses_do_not_change_with_the_fast_path(
    continuous: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    ac = dataclasses.replace(DEBUG.ac, horizon=5)
    rssm = RSSMConfig(deter=32, hidden=32, stoch=4, classes=4)
    cfg = dataclasses.replace(DEBUG, rssm=rssm, ac=ac)
    torch.manual_seed(0)
    wm, actor, critic = build_networks({"vector": (5,)}, 2, not continuous, cfg)
    slow = build_networks({"vector": (5,)}, 2, not continuous, cfg)[2]
    assert wm.reward.out is not None and critic.net.out is not None
    with torch.no_grad():  # non-zero reward and value heads, so returns depend on the states
        wm.reward.out.weight.normal_(0.0, 0.05)
        critic.net.out.weight.normal_(0.0, 0.05)
    is_first = torch.zeros(6, 4, dtype=torch.bool)
    is_first[:, 0] = True
    embed = wm.encoder({"vector": torch.randn(6, 4, 5)})
    action = torch.zeros(6, 4, 2)

    def run() -> tuple[torch.Tensor, ...]:
        gen = torch.Generator().manual_seed(7)
        posts, _, _ = wm.rssm.observe(embed, action, is_first, gen=gen)
        start = posts.map(lambda x: x.detach().flatten(0, 1))
        with torch.set_grad_enabled(continuous):  # dynamics backprop for continuous actions
            traj = imagine(wm, actor, start, torch.ones(24), cfg.ac, gen)
        out = actor_critic_losses(
            traj, actor, critic, slow, ReturnNormalizer(), cfg.ac, dynamics=continuous
        )
        params = [*actor.parameters(), *critic.parameters()]
        grads = torch.autograd.grad(out.actor_loss + out.critic_loss, params, allow_unused=True)
        feat = traj.feat.tensor() if isinstance(traj.feat, OneHotInput) else traj.feat
        flat = torch.cat([g.flatten() for g in grads if g is not None])
        tail = traj.feat.map(lambda x: x[:, 1:]) if isinstance(traj.feat, OneHotInput) else None
        dist = wm.reward_dist(feat[:, 1:] if tail is None else tail)
        # the reward is a two-hot mean sum_i p_i v_i over symexp bins up to ~5e8: it nearly
        # cancels, so its rounding error scales with sum_i p_i |v_i|, not with the result
        mass = (torch.softmax(dist.logits, -1) * dist.bins.abs()).sum(-1)
        outs = (feat, traj.reward, dist.logits, mass, out.actor_loss, flat)
        return (*(x.detach() for x in outs), posts.choice)

    feat, reward, logits, _, loss, grads, choice = run()
    assert choice is not None  # the fast path was taken
    with monkeypatch.context() as patch:
        _strip_choices(patch)
        d_feat, d_reward, d_logits, d_mass, d_loss, d_grads, d_choice = run()
    assert d_choice is None
    # the fast path sums the same products in another order: equal up to float32 rounding at
    # the scale of each quantity (observed: ~1e-7 of it; a wrong column would be ~1)
    assert_close_to_scale(feat, d_feat, 1e-5, what="features")
    assert_close_to_scale(logits, d_logits, 1e-5, what="reward logits")
    assert_close_to_scale(reward, d_reward, 1e-5, scale=d_mass, what="rewards")
    assert_close_to_scale(loss, d_loss, 1e-4, what="actor loss")
    assert_close_to_scale(grads, d_grads, 1e-4, what="actor and critic gradients")
    assert float(grads.abs().sum()) > 0


def test_states_built_by_hand_are_read_densely() -> None:
    cfg = dataclasses.replace(DEBUG, rssm=RSSMConfig(deter=32, hidden=32, stoch=4, classes=4))
    wm = build_networks({"vector": (5,)}, 2, True, cfg)[0]
    state = State(torch.randn(3, 32), torch.randn(3, 16))  # not one-hot: no choice, dense
    assert isinstance(wm.rssm.features(state), torch.Tensor)
    nxt, _ = wm.rssm.img_step(state, torch.zeros(3, 2))
    assert nxt.choice is not None and isinstance(wm.rssm.features(nxt), OneHotInput)
