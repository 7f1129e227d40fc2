"""Genie's second increment: the latent action model and the MaskGIT dynamics, on tiny sizes
(the defaults are a GPU-sized model)."""

from __future__ import annotations

import dataclasses
import itertools
import math
import re
from collections.abc import Iterator

import pytest
import torch

from wm_ray.models.genie.config import (
    DynamicsConfig,
    GenieConfig,
    LatentActionConfig,
    STConfig,
    check_config,
)
from wm_ray.models.genie.dynamics import (
    DynamicsModel,
    MaskGITSampler,
    generate,
    mask_schedule,
    masked_cross_entropy,
)
from wm_ray.models.genie.latent_actions import LatentActionModel

DYN = DynamicsConfig(model=STConfig(32, 2, 2, 2), steps=6)
VOCAB, TOKENS, ACTIONS, FRAMES = 12, 4, 4, 5
LAM_CFG = LatentActionConfig(
    patch=4,
    vocab=8,
    code_dim=8,
    encoder=STConfig(32, 2, 2, 2),
    decoder=STConfig(32, 2, 2, 2),
    dead_code_every=25,
)
SIZE = 16
MOVES = ((-2, 0), (2, 0), (0, -2), (0, 2))  # up, down, left, right by 2 pixels


@pytest.fixture(autouse=True)
def _threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)


def _dynamics() -> DynamicsModel:
    return DynamicsModel(DYN, VOCAB, TOKENS, ACTIONS, FRAMES)


def _clip(batch: int = 3, frames: int = FRAMES) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(0, VOCAB, (batch, frames, TOKENS))
    actions = torch.randint(0, ACTIONS, (batch, frames - 1))
    return tokens, actions


# -- masked training ---------------------------------------------------------------------------


def test_mask_rates_are_uniform_in_half_to_one_and_frame_zero_is_context() -> None:
    model = _dynamics()
    rates = model.mask_rates(4000)
    assert rates.min() >= 0.5 and rates.max() <= 1.0
    assert rates.min() < 0.52 and rates.max() > 0.98
    assert abs(float(rates.mean()) - 0.75) < 0.02
    mask = model.sample_mask(torch.Size((64, FRAMES, 64)))
    assert not mask[:, 0].any()
    per_clip = mask[:, 1:].float().mean(dim=(1, 2))
    assert per_clip.min() > 0.35 and per_clip.max() <= 1.0


def test_loss_counts_the_masked_positions_only() -> None:
    logits = torch.randn(2, 3, 4, VOCAB)
    targets = torch.randint(0, VOCAB, (2, 3, 4))
    mask = torch.rand(2, 3, 4) < 0.5
    mask[0, 1, 2], mask[1, 2, 3] = True, False
    base = masked_cross_entropy(logits, targets, mask)
    unmasked = targets.clone()
    unmasked[1, 2, 3] = (unmasked[1, 2, 3] + 1) % VOCAB
    assert torch.equal(masked_cross_entropy(logits, unmasked, mask), base)
    masked = targets.clone()
    masked[0, 1, 2] = (masked[0, 1, 2] + 1) % VOCAB
    assert not torch.equal(masked_cross_entropy(logits, masked, mask), base)
    # The model's loss is that cross-entropy of its predictions from the masked input.
    model = _dynamics().eval()
    tokens, actions = _clip()
    mask = model.sample_mask(tokens.shape)
    loss, metrics = model.loss(tokens, actions, mask)
    expected = masked_cross_entropy(
        model(tokens.masked_fill(mask, model.mask_id), actions), tokens, mask
    )
    torch.testing.assert_close(loss, expected)
    assert set(metrics) == {
        "train/loss/dynamics/total",
        "train/dynamics/accuracy",
        "train/dynamics/mask_rate",
    }


# -- MaskGIT -----------------------------------------------------------------------------------


def test_mask_schedule_is_cosine_non_increasing_and_ends_at_zero() -> None:
    for tokens, steps in ((16, 25), (256, 25), (4, 6), (1, 1), (100, 8)):
        counts = mask_schedule(tokens, steps)
        assert len(counts) == steps and counts[-1] == 0
        assert all(a >= b for a, b in zip([tokens, *counts], counts, strict=False))
        assert all(c >= 1 for c in counts[:-1])  # exactly `steps` steps fill the frame
        for s, c in enumerate(counts[:-1], start=1):
            assert c == max(1, math.floor(tokens * math.cos(math.pi / 2 * s / steps) + 1e-9))
    assert mask_schedule(10, 5, "linear") == [8, 6, 4, 2, 0]
    with pytest.raises(ValueError, match="schedule='square'"):
        mask_schedule(4, 2, "square")


def test_maskgit_fills_every_token_in_the_set_number_of_steps() -> None:
    calls: list[torch.Tensor] = []

    def logits_fn(frame: torch.Tensor) -> torch.Tensor:
        calls.append(frame.clone())
        return torch.randn(*frame.shape, VOCAB)

    sampler = MaskGITSampler(steps=7, temperature=2.0)
    out = sampler.sample(logits_fn, batch=3, tokens=20, mask_id=VOCAB)
    assert len(calls) == 7
    assert calls[0].eq(VOCAB).all()  # starts all masked
    assert out.tokens.shape == (3, 20) and out.tokens.max() < VOCAB and out.tokens.min() >= 0
    expected = torch.tensor([20, *mask_schedule(20, 7)])
    assert torch.equal(out.masked, expected[:, None].expand(8, 3))
    # What a step decided stays decided.
    for before, after in itertools.pairwise(calls):
        kept = before != VOCAB
        assert torch.equal(after[kept], before[kept])
    with pytest.raises(ValueError, match="temperature=0"):
        MaskGITSampler(temperature=0)


def test_generate_rolls_frames_forward_with_every_token_decided() -> None:
    model = _dynamics().eval()
    tokens, actions = _clip(batch=2, frames=3)
    more = torch.randint(0, ACTIONS, (2, 4))
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    out = generate(model, tokens, torch.cat([actions, more], dim=1), frames=4)
    assert out.shape == (2, 7, TOKENS) and out.max() < VOCAB
    assert torch.equal(out[:, :3], tokens)
    assert len(calls) == 4 * DYN.steps
    with pytest.raises(ValueError, match=re.escape("(B, T0 - 1 + frames) = (2, 6)")):
        generate(model, tokens, actions, frames=4)


# -- the dynamics model ------------------------------------------------------------------------


def test_dynamics_is_causal_in_time() -> None:
    model = _dynamics().eval()
    tokens, actions = _clip()
    tokens[:, 2:, 1] = model.mask_id  # mask ids are inputs like any other
    logits = model(tokens, actions)
    assert logits.shape == (3, FRAMES, TOKENS, VOCAB)
    for t in range(FRAMES - 1):
        changed = tokens.clone()
        changed[:, t + 1 :] = torch.randint(0, VOCAB, changed[:, t + 1 :].shape)
        after = model(changed, actions)
        torch.testing.assert_close(after[:, : t + 1], logits[:, : t + 1], rtol=0, atol=1e-6)
        assert not torch.allclose(after[:, t + 1], logits[:, t + 1])


def test_the_latent_action_enters_the_next_frame_only() -> None:
    model = _dynamics().eval()
    tokens, actions = _clip()
    logits = model(tokens, actions)
    for t in range(FRAMES - 1):
        changed = actions.clone()
        changed[:, t] = (changed[:, t] + 1) % ACTIONS
        after = model(tokens, changed)
        torch.testing.assert_close(after[:, : t + 1], logits[:, : t + 1], rtol=0, atol=1e-6)
        assert not torch.allclose(after[:, t + 1], logits[:, t + 1])


def test_dynamics_gives_no_gradient_to_the_actions_source() -> None:
    model = _dynamics()
    tokens, actions = _clip()
    loss, _ = model.loss(tokens, actions)
    loss.backward()
    assert model.action_embed.weight.grad is not None
    assert not actions.is_floating_point()  # integer codes: nothing upstream to reach


def test_dynamics_loss_falls_on_a_toy_token_sequence() -> None:
    # Next frame = this frame shifted by the action's offset: learnable from tokens + actions.
    batch, frames = 16, 4
    start = torch.randint(0, VOCAB, (batch, 1, TOKENS))
    actions = torch.randint(0, ACTIONS, (batch, frames - 1))
    steps = torch.cat([torch.zeros(batch, 1, dtype=torch.int64), actions + 1], 1).cumsum(1)
    tokens = (start + steps[:, :, None]) % VOCAB
    model = DynamicsModel(DYN, VOCAB, TOKENS, ACTIONS, frames).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(120):
        loss, _ = model.loss(tokens, actions)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    first, last = sum(losses[:5]) / 5, sum(losses[-10:]) / 10
    assert last < 0.5 * first, (first, last)


def test_dynamics_refuses_bad_inputs() -> None:
    model = _dynamics()
    tokens, actions = _clip()
    with pytest.raises(ValueError, match=re.escape("expected actions (B, T - 1) = (3, 4)")):
        model(tokens, actions[:, :2])
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 12\), got 0\.\.12"):
        bad = torch.zeros_like(tokens)
        bad[0, 1, 2] = VOCAB  # the mask id is no target
        model.loss(bad, actions)
    with pytest.raises(ValueError, match=r"latent actions must be in \[0, 4\)"):
        model.loss(tokens, actions + ACTIONS)
    with pytest.raises(ValueError, match=re.escape("(B, T, 4)")):
        model(tokens[..., :3], actions)


# -- the latent action model -------------------------------------------------------------------


def _square_video(batch: int, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips ``(B, T, 16, 16, 1)`` uint8 of a 4 x 4 square moved each frame by one of 4 known
    actions (2 pixels up, down, left or right, wrapping around), and the actions ``(B, T - 1)``."""
    video = torch.zeros(batch, frames, SIZE, SIZE, 1, dtype=torch.uint8)
    actions = torch.randint(0, 4, (batch, frames - 1))
    for b in range(batch):
        frame = torch.zeros(SIZE, SIZE, 1, dtype=torch.uint8)
        y, x = 2 * int(torch.randint(0, 6, ())), 2 * int(torch.randint(0, 6, ()))
        frame[y : y + 4, x : x + 4] = 255
        video[b, 0] = frame
        for t in range(frames - 1):
            frame = frame.roll(MOVES[int(actions[b, t])], dims=(0, 1))
            video[b, t + 1] = frame
    return video, actions


def test_lam_reconstruction_loss_falls_on_a_square_moved_by_four_actions() -> None:
    lam = LatentActionModel(LAM_CFG, SIZE, 1, max_frames=4).train()
    opt = torch.optim.Adam(lam.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        video, _ = _square_video(16, 4)
        loss, metrics = lam.loss(video)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(metrics["train/loss/lam/mse"]))
    first, last = sum(losses[:5]) / 5, sum(losses[-10:]) / 10
    assert last < 0.5 * first, (first, last)
    assert {"train/loss/lam/total", "train/loss/lam/commitment", "train/lam/usage"} <= set(metrics)
    video, _ = _square_video(32, 4)
    codes = lam.eval().infer(video)
    assert codes.shape == (32, 3) and codes.dtype == torch.int64
    assert codes.min() >= 0 and codes.max() < LAM_CFG.vocab
    assert lam.predict(video, codes).shape == (32, 3, SIZE, SIZE, 1)


def test_lam_is_causal_and_its_decoder_uses_the_action() -> None:
    lam = LatentActionModel(LAM_CFG, SIZE, 1, max_frames=4).eval()
    video, _ = _square_video(4, 4)
    z = lam.encode(video)
    assert z.shape == (4, 3, LAM_CFG.code_dim)
    for t in range(2):  # action t sees frames <= t + 1 only
        changed = video.clone()
        changed[:, t + 2 :] = torch.randint(0, 256, changed[:, t + 2 :].shape, dtype=torch.uint8)
        torch.testing.assert_close(
            lam.encode(changed)[:, : t + 1], z[:, : t + 1], rtol=0, atol=1e-6
        )
    codes = torch.zeros(4, 3, dtype=torch.int64)
    pred = lam.predict(video, codes)
    other = codes.clone()
    other[:, 1] = 5
    after = lam.predict(video, other)
    torch.testing.assert_close(after[:, :1], pred[:, :1], rtol=0, atol=1e-6)
    assert not torch.allclose(after[:, 1], pred[:, 1])
    with pytest.raises(ValueError, match=r"2\.\.4"):
        lam.infer(video[:, :1])
    with pytest.raises(ValueError, match=r"latent actions must be in \[0, 8\)"):
        lam.predict(video, codes + 8)
    with pytest.raises(
        ValueError, match=re.escape("genie.lam.patch=5 must divide the frame side 16")
    ):
        LatentActionModel(dataclasses.replace(LAM_CFG, patch=5), SIZE, 1)


def test_lam_config_checks_the_new_keys() -> None:
    cfg = GenieConfig()
    bad = dataclasses.replace(cfg, lam=dataclasses.replace(cfg.lam, dead_code_every=-1))
    assert check_config(bad) == ["genie.lam.dead_code_every=-1 (must be >= 0)"]
    lam = LatentActionModel(cfg.lam, 64, 3, cfg.frames)
    assert lam.vq.vocab == 8 and lam.tokens == 16
