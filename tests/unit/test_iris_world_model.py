"""IRIS world model: causality, episode and context masks, KV cache == full recomputation, the
world-model loss's labels, imagination's termination masks and the actor-critic loss."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from wm_ray.models.common.actor_critic import ActorCritic
from wm_ray.models.common.imagination import Trajectory, reinforce_loss, rollout
from wm_ray.models.common.testing import assert_close_to_scale
from wm_ray.models.iris.config import ActorCriticConfig, TokenizerConfig, WorldModelConfig
from wm_ray.models.iris.imagination import Dream, FrameDream, Stepper
from wm_ray.models.iris.losses import world_model_loss
from wm_ray.models.iris.tokenizer import Tokenizer
from wm_ray.models.iris.transformer import WorldModel

VOCAB, K, ACTIONS = 16, 4, 3
BLOCK = K + 1


def make_wm(context: int = 8, reward: str = "sign", seed: int = 0) -> WorldModel:
    torch.manual_seed(seed)
    cfg = WorldModelConfig(
        layers=2, heads=2, embed_dim=32, dropout=0.0, context=context, reward=reward, bins=15
    )
    wm = WorldModel(cfg, VOCAB, K, ACTIONS).eval()
    with torch.no_grad():  # larger weights than GPT init so every input visibly matters
        for p in wm.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return wm


def random_ids(batch: int, steps: int, seed: int = 1) -> torch.Tensor:
    """Flat token ids ``(B, steps * BLOCK)`` with frame tokens and actions in their slots."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randint(0, VOCAB, (batch, steps, K), generator=g)
    act = torch.randint(0, ACTIONS, (batch, steps, 1), generator=g)
    return torch.cat([obs, act], 2).flatten(1)


def full_outputs(wm: WorldModel, ids: torch.Tensor, is_first: torch.Tensor) -> torch.Tensor:
    """Every head's output at every position, concatenated ``(B, N, V + 3 + 1)``."""
    out = wm(wm.embed_tokens(ids, 0), mask=wm.training_mask(is_first))
    return torch.cat([out.obs_logits, out.reward_logits, out.end_logits[..., None]], -1)


def test_interleave_and_embed_tokens_agree() -> None:
    wm = make_wm()
    ids = random_ids(2, 3)
    blocks = ids.view(2, 3, BLOCK)
    a = wm.interleave(blocks[:, :, :K], blocks[:, :, K])
    b = wm.embed_tokens(ids, 0)
    torch.testing.assert_close(a, b)


@torch.no_grad()
def test_changing_a_token_never_changes_an_earlier_output() -> None:
    wm = make_wm()
    steps = 4
    ids = random_ids(2, steps)
    is_first = torch.zeros(2, steps, dtype=torch.bool)
    base = full_outputs(wm, ids, is_first)
    n = ids.shape[1]
    for p in range(n):
        changed = ids.clone()
        limit = ACTIONS if p % BLOCK == K else VOCAB
        changed[:, p] = (changed[:, p] + 1) % limit
        out = full_outputs(wm, changed, is_first)
        torch.testing.assert_close(out[:, :p], base[:, :p], rtol=0, atol=1e-6)
        assert (out[:, p:] - base[:, p:]).abs().max() > 1e-4, f"token {p} had no effect at all"


@torch.no_grad()
def test_no_attention_across_an_episode_start_or_beyond_the_context() -> None:
    steps = 6
    ids = random_ids(1, steps)
    # episode start at step 3: steps 3.. must not see steps 0..2
    wm = make_wm(context=8)
    is_first = torch.zeros(1, steps, dtype=torch.bool)
    is_first[0, 3] = True
    base = full_outputs(wm, ids, is_first)
    changed = ids.clone()
    changed[:, : 3 * BLOCK] = (changed[:, : 3 * BLOCK] + 1) % ACTIONS
    out = full_outputs(wm, changed, is_first)
    torch.testing.assert_close(out[:, 3 * BLOCK :], base[:, 3 * BLOCK :], rtol=0, atol=1e-6)
    # context of 2 blocks: each of the 2 layers looks back 1 block, so step 0 reaches steps
    # 1 and 2 (through step 1) but never step 3
    wm = make_wm(context=2)
    is_first[:] = False
    base = full_outputs(wm, ids, is_first)
    changed = ids.clone()
    changed[:, :BLOCK] = (changed[:, :BLOCK] + 1) % ACTIONS  # step 0
    out = full_outputs(wm, changed, is_first)
    torch.testing.assert_close(out[:, 3 * BLOCK :], base[:, 3 * BLOCK :], rtol=0, atol=1e-6)
    assert (out[:, 2 * BLOCK : 3 * BLOCK] - base[:, 2 * BLOCK : 3 * BLOCK]).abs().max() > 1e-4


@torch.no_grad()
@pytest.mark.parametrize("context", [8, 3])
def test_kv_cache_gives_the_full_recomputation_logits(context: int) -> None:
    """Token-by-token through the cache (sliding past the context when it is 3 blocks)."""
    wm = make_wm(context=context)
    steps = 6
    ids = random_ids(3, steps)
    full = full_outputs(wm, ids, torch.zeros(3, steps, dtype=torch.bool))
    cache = wm.new_cache(3, torch.device("cpu"))
    outs = []
    for p in range(ids.shape[1]):
        out = wm(wm.embed_tokens(ids[:, p : p + 1], cache.next), cache=cache)
        outs.append(torch.cat([out.obs_logits, out.reward_logits, out.end_logits[..., None]], -1))
        assert cache.size == min(p + 1, context * BLOCK)
    cached = torch.cat(outs, 1)
    assert_close_to_scale(cached, full, 1e-4, what="cached logits")
    assert int(cache.next) == steps * BLOCK
    if context < steps:  # the ring went round: every slot was overwritten at least once
        assert int(cache.positions.min()) >= steps * BLOCK - context * BLOCK


@torch.no_grad()
def test_cached_dream_samples_what_full_recomputation_samples() -> None:
    wm = make_wm(context=3)
    batch, horizon = 4, 5  # 1 + 5 frames: the context slides twice
    start = torch.randint(0, VOCAB, (batch, K), generator=torch.Generator().manual_seed(3))
    actions = torch.randint(
        0, ACTIONS, (horizon, batch), generator=torch.Generator().manual_seed(4)
    )
    results = []
    for cached in (True, False):
        dream = Dream(wm, batch, cached=cached)
        dream.observe(start)
        gen = torch.Generator().manual_seed(5)
        frames, logits = [], []
        for t in range(horizon):
            reward_logits, end_logits = dream.act(actions[t])
            logits.append(torch.cat([reward_logits, end_logits[:, None]], -1))
            frames.append(dream.generate(1.0, gen))
        results.append((torch.stack(frames), torch.stack(logits), dream.tokens_fed))
    (f1, l1, n1), (f2, l2, n2) = results
    assert torch.equal(f1, f2)
    assert_close_to_scale(l1, l2, 1e-4, what="reward and end logits")
    assert n1 == n2 == K + horizon * BLOCK


def test_dream_refuses_out_of_order_calls() -> None:
    dream = Dream(make_wm(), 2)
    with pytest.raises(RuntimeError, match="whole frame"):
        dream.act(torch.zeros(2, dtype=torch.long))
    with pytest.raises(RuntimeError, match="act"):
        dream.generate(1.0, None)


def _loss_inputs(steps: int = 5) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "tokens": torch.randint(0, VOCAB, (2, steps, K), generator=g),
        "actions": torch.randint(0, ACTIONS, (2, steps), generator=g),
        "is_first": torch.zeros(2, steps, dtype=torch.bool),
        "reward": torch.zeros(2, steps),
        "is_terminal": torch.zeros(2, steps, dtype=torch.bool),
    }


@torch.no_grad()
@pytest.mark.parametrize("reward", ["sign", "twohot"])
def test_world_model_loss_learns_transitions_within_episodes_only(reward: str) -> None:
    wm = make_wm(reward=reward)
    inputs = _loss_inputs()
    inputs["is_first"][:, 3] = True

    def loss(**changes: torch.Tensor) -> float:
        return float(world_model_loss(wm, **{**inputs, **changes})[0])

    base = loss()
    # the reward and termination stored with an episode start are no transition's target
    reward_first = inputs["reward"].clone()
    reward_first[:, 3] = 1.0
    terminal_first = inputs["is_terminal"].clone()
    terminal_first[:, 3] = True
    assert loss(reward=reward_first, is_terminal=terminal_first) == pytest.approx(base, abs=1e-6)
    # ... but within an episode they are
    reward_mid = inputs["reward"].clone()
    reward_mid[:, 2] = 1.0
    assert loss(reward=reward_mid) != pytest.approx(base, abs=1e-6)
    terminal_mid = inputs["is_terminal"].clone()
    terminal_mid[:, 4] = True
    assert loss(is_terminal=terminal_mid) != pytest.approx(base, abs=1e-6)


def test_world_model_loss_never_predicts_an_episode_start_from_the_last_episode() -> None:
    """The obs-token loss has no gradient at the action before an episode start (its target
    would be the next episode's first token) nor at the sequence's last position, and has one
    at every other position except each frame's last token (which predicts the action)."""
    wm = make_wm()
    inputs = _loss_inputs()
    inputs["is_first"][:, 3] = True
    captured: list[torch.Tensor] = []

    def keep(_module: torch.nn.Module, _inp: object, out: torch.Tensor) -> None:
        out.retain_grad()
        captured.append(out)

    handle = wm.obs_head.register_forward_hook(keep)
    loss, _ = world_model_loss(wm, **inputs)
    handle.remove()
    loss.backward()
    grad = captured[0].grad
    assert grad is not None
    has_grad = grad.abs().sum(-1).view(2, 5, BLOCK) > 0  # (B, T, slot)
    expected = torch.ones(5, BLOCK, dtype=torch.bool)
    expected[:, K - 1] = False  # a frame's last token: the next token is an action
    expected[2, K] = False  # action of step 2: step 3 starts a new episode
    expected[4, K] = False  # the last action: its next frame is not in the sequence
    assert torch.equal(has_grad[0], expected) and torch.equal(has_grad[1], expected)


def _tiny_tokenizer(size: int = 32) -> Tokenizer:
    cfg = TokenizerConfig(
        vocab=VOCAB, embed_dim=8, tokens=K, channels=8, res_blocks=1, attn_resolutions=()
    )
    return Tokenizer(cfg, image_size=size, channels=3).eval()


def test_imagination_masks_every_step_after_a_termination() -> None:
    torch.manual_seed(0)
    wm = make_wm()
    with torch.no_grad():  # the end head says "terminal" with certainty
        wm.end_head[-1].bias.fill_(50.0)
    tokenizer = _tiny_tokenizer()
    cfg = ActorCriticConfig(cnn_depth=4, lstm=16, horizon=4, burn_in=0)
    ac = ActorCritic(3, 32, ACTIONS, cfg.cnn_depth, cfg.lstm)
    start = torch.randint(0, VOCAB, (3, K))
    alive = torch.tensor([True, True, False])
    dream = FrameDream(wm, tokenizer, start, cfg.temperature, None)
    state = ac.initial(3, torch.device("cpu"))
    traj = rollout(dream, ac, dream.first_frame, state, alive, cfg.horizon, None)
    assert traj.ends.shape == (3, 4) and bool((traj.ends == 1).all())
    expected = torch.tensor([[1.0, 0, 0, 0], [1.0, 0, 0, 0], [0.0, 0, 0, 0]])
    assert torch.equal(traj.alive, expected)
    assert traj.values.shape == (3, 5) and traj.logits.shape == (3, 4, ACTIONS)
    loss, metrics = reinforce_loss(traj, cfg.gamma, cfg.lam, cfg.entropy)
    loss.backward()
    assert all(p.grad is not None for p in ac.parameters())
    assert float(metrics["train/imag/weight"]) == pytest.approx(2 / 12)


def test_actor_critic_loss_pushes_up_actions_with_positive_advantage() -> None:
    cfg = ActorCriticConfig(horizon=1, entropy=0.0, gamma=1.0, lam=1.0)
    logits = torch.zeros(1, 1, 2, requires_grad=True)
    values = torch.zeros(1, 2, requires_grad=True)
    traj = Trajectory(
        logits=logits,
        actions=torch.tensor([[1]]),
        values=values,
        rewards=torch.tensor([[1.0]]),
        ends=torch.tensor([[1.0]]),
        alive=torch.ones(1, 1),
    )
    loss, _ = reinforce_loss(traj, cfg.gamma, cfg.lam, cfg.entropy)
    loss.backward()
    assert logits.grad is not None and values.grad is not None
    assert logits.grad[0, 0, 1] < 0 < logits.grad[0, 0, 0]  # descent raises action 1's logit
    assert values.grad[0, 0] < 0  # the value of s_0 moves up toward the return 1


def _dream_frames(
    wm: WorldModel, stepper: Stepper | None, start: torch.Tensor, actions: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Frames and reward/end logits of a dream from ``start`` under ``actions`` ``(H, B)``."""
    dream = Dream(wm, start.shape[0], cached=stepper is not None, stepper=stepper)
    dream.observe(start)
    gen = torch.Generator(start.device).manual_seed(5)
    frames, logits = [], []
    for step_actions in actions:
        tokens, reward_logits, end_logits = dream.frame(step_actions, 1.0, gen)
        frames.append(tokens)
        logits.append(torch.cat([reward_logits, end_logits[:, None]], -1))
    return torch.stack(frames), torch.stack(logits)


@torch.no_grad()
def test_compiled_stepper_is_one_graph_that_samples_what_eager_samples() -> None:
    """The one-token step through the fixed ring cache compiles to one graph, reused over
    every token of every dream (fresh dreams included), and samples what eager samples."""
    wm = make_wm(context=3)
    batch, horizon = 3, 4  # 1 + 4 frames: the ring goes round
    start = torch.randint(0, VOCAB, (batch, K), generator=torch.Generator().manual_seed(3))
    actions = torch.randint(
        0, ACTIONS, (horizon, batch), generator=torch.Generator().manual_seed(4)
    )
    graphs = []

    def counting(gm: torch.fx.GraphModule, inputs: list[torch.Tensor]) -> Any:
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    compiled = Stepper(wm, batch, "compiled", backend=counting)
    eager_frames, eager_logits = _dream_frames(wm, Stepper(wm, batch), start, actions)
    for _ in range(2):  # a second dream on the same stepper: the same graph again
        frames, logits = _dream_frames(wm, compiled, start, actions)
        assert torch.equal(frames, eager_frames)
        assert_close_to_scale(logits, eager_logits, 1e-4, what="reward and end logits")
    assert len(graphs) == 1, f"the token step compiled {len(graphs)} times"
    full_frames, _ = _dream_frames(wm, None, start, actions)
    assert torch.equal(full_frames, eager_frames)


def test_stepper_refuses_an_unknown_mode_and_a_wrong_batch() -> None:
    wm = make_wm()
    with pytest.raises(ValueError, match=r"'graph'.*eager"):
        Stepper(wm, 2, "graph")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="stepper for 2 streams cannot run 3"):
        Dream(wm, 3, stepper=Stepper(wm, 2))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@torch.no_grad()
def test_captured_stepper_replays_frames_that_match_eager_on_cuda() -> None:
    """A CUDA-graph captured frame (action + K tokens, one replay) against the eager CUDA
    stepper: the same tokens and logits over dreams that wrap the ring, a second dream on the
    same graphs, and the ring left as eager leaves it."""
    wm = make_wm(context=3).cuda()
    batch, horizon = 4, 6
    start = torch.randint(0, VOCAB, (batch, K), generator=torch.Generator().manual_seed(3)).cuda()
    actions = torch.randint(
        0, ACTIONS, (horizon, batch), generator=torch.Generator().manual_seed(4)
    )
    actions = actions.cuda()
    eager = Stepper(wm, batch)
    captured = Stepper(wm, batch, "captured")
    assert captured.capture
    eager_frames, eager_logits = _dream_frames(wm, eager, start, actions)
    for _ in range(2):
        frames, logits = _dream_frames(wm, captured, start, actions)
        assert torch.equal(frames, eager_frames)
        assert_close_to_scale(logits, eager_logits, 1e-4, what="captured reward and end logits")
    assert torch.equal(captured.cache.positions, eager.cache.positions)
    for ours, theirs in zip(captured.cache.keys, eager.cache.keys, strict=True):
        assert_close_to_scale(ours, theirs, 1e-4, what="cached keys")
    assert len(captured._graphs) == 1
