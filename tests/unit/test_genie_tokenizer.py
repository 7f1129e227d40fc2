"""Genie's first increment: the ST transformer, the VQ, the video tokenizer and the config
checks, on tiny sizes (the defaults are a GPU-sized model)."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator

import pytest
import torch

from wm_ray.models.genie.config import (
    GenieConfig,
    STConfig,
    TokenizerConfig,
    check_config,
    validate,
)
from wm_ray.models.genie.st_transformer import STBlock, STTransformer, causal_bias
from wm_ray.models.genie.tokenizer import VideoTokenizer, patchify, unpatchify
from wm_ray.models.genie.vq import VectorQuantizer

TINY = TokenizerConfig(
    patch=4,
    vocab=16,
    code_dim=8,
    encoder=STConfig(32, 2, 2, 2),
    decoder=STConfig(32, 2, 2, 2),
    dead_code_every=0,
)
SIZE, FRAMES = 16, 4


@pytest.fixture(autouse=True)
def _threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(before)


# -- ST transformer ---------------------------------------------------------------------------


def test_causal_bias_hides_the_future_and_shows_the_frame_itself() -> None:
    bias = causal_bias(3)
    assert torch.equal(torch.isinf(bias), torch.ones(3, 3, dtype=torch.bool).triu(1))
    assert bias.diagonal().eq(0).all()


def test_temporal_attention_is_causal_and_includes_the_frame_itself() -> None:
    net = STTransformer(STConfig(16, 2, 2, 2), tokens=4, max_frames=5).eval()
    x = torch.randn(2, 5, 4, 16)
    out = net(x)
    assert out.shape == x.shape and torch.isfinite(out).all()
    for t in range(4):
        changed = x.clone()
        changed[:, t + 1 :] += torch.randn_like(changed[:, t + 1 :])
        after = net(changed)
        torch.testing.assert_close(after[:, : t + 1], out[:, : t + 1], rtol=0, atol=1e-6)
        assert not torch.allclose(after[:, t + 1], out[:, t + 1])
    # Frame 0 attends to itself: its output depends on its own input.
    first = x.clone()
    first[:, 0] += torch.randn_like(first[:, 0])  # not a constant: LayerNorm removes those
    assert not torch.allclose(net(first)[:, 0], out[:, 0])


def test_st_block_without_a_mask_mixes_every_frame() -> None:
    block = STBlock(16, 2, 2).eval()
    x = torch.randn(1, 3, 4, 16)
    changed = x.clone()
    changed[:, 2] += torch.randn_like(changed[:, 2])
    assert not torch.allclose(block(changed)[:, 0], block(x)[:, 0])
    assert block.spatial.mlp is None and block.temporal.mlp is not None


def test_st_transformer_refuses_a_wrong_shape() -> None:
    net = STTransformer(STConfig(16, 1, 2, 2), tokens=4, max_frames=3)
    with pytest.raises(ValueError, match=r"T <= 3, 4"):
        net(torch.randn(1, 4, 4, 16))
    with pytest.raises(ValueError, match="heads=3"):
        STTransformer(STConfig(16, 1, 3, 2), tokens=4, max_frames=3)


# -- VQ ---------------------------------------------------------------------------------------


def test_vq_codes_in_range_and_straight_through_gradient() -> None:
    vq = VectorQuantizer(8, 4).train()
    z = torch.randn(5, 6, 4, requires_grad=True)
    q = vq(z)
    assert q.indices.shape == (5, 6) and q.indices.dtype == torch.int64
    assert q.indices.min() >= 0 and q.indices.max() < 8
    torch.testing.assert_close(q.z_q, vq.codebook[q.indices])
    (q.z_q.sum() + q.loss).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert vq.codebook.grad is not None and vq.codebook.grad.abs().sum() > 0


def test_vq_ema_mode_moves_the_codebook_without_gradients() -> None:
    vq = VectorQuantizer(4, 3, codebook="ema", ema_decay=0.5, dead_code_every=0).train()
    assert not vq.codebook.requires_grad
    before = vq.codebook.detach().clone()
    z = torch.randn(64, 3) + 2.0
    q = vq(z)
    assert q.metrics["codebook"] == 0
    assert not torch.equal(vq.codebook, before)
    # The codes used moved towards the mean of the vectors assigned to them.
    for code in q.indices.unique():
        mean = z[q.indices == code].mean(0)
        assert (vq.codebook[code] - mean).norm() < (before[code] - mean).norm()
    vq.eval()
    frozen = vq.codebook.detach().clone()
    vq(z)
    assert torch.equal(vq.codebook, frozen)  # evaluation leaves the codebook alone


def test_a_dead_code_is_reseeded_from_the_batch() -> None:
    vq = VectorQuantizer(4, 3, dead_code_every=2, dead_code_threshold=0.5).train()
    with torch.no_grad():
        vq.codebook[3] = 100.0  # far from every input: never the nearest code
    z = torch.randn(32, 3)
    q1 = vq(z)
    assert "dead_reset" not in q1.metrics and (q1.indices != 3).all()
    q2 = vq(z)
    assert q2.metrics["dead_reset"] >= 1
    row = vq.codebook[3].detach()
    assert (z - row).norm(dim=1).min() < 1e-6  # re-seeded with one of the batch's vectors


# -- tokenizer --------------------------------------------------------------------------------


def test_patchify_round_trip() -> None:
    x = torch.rand(2, 3, SIZE, SIZE, 3)
    p = patchify(x, 4)
    assert p.shape == (2, 3, 16, 48)
    assert torch.equal(unpatchify(p, 4, SIZE, SIZE), x)
    assert torch.equal(p[0, 0, 1], x[0, 0, :4, 4:8].reshape(-1))  # row-major patches


def test_tokenizer_is_causal_in_time() -> None:
    tok = VideoTokenizer(TINY, SIZE, 3, FRAMES).eval()
    video = torch.randint(0, 256, (2, FRAMES, SIZE, SIZE, 3), dtype=torch.uint8)
    tokens = tok.tokenize(video)
    assert tokens.shape == (2, FRAMES, tok.tokens) and tokens.max() < TINY.vocab
    recon = tok.decode(tokens)
    assert recon.shape == (2, FRAMES, SIZE, SIZE, 3)
    for t in range(FRAMES - 1):
        changed = video.clone()
        changed[:, t + 1 :] = torch.randint(0, 256, changed[:, t + 1 :].shape, dtype=torch.uint8)
        z_before, z_after = tok.encode(video), tok.encode(changed)
        torch.testing.assert_close(z_after[:, : t + 1], z_before[:, : t + 1], rtol=0, atol=1e-6)
        assert torch.equal(tok.tokenize(changed)[:, : t + 1], tokens[:, : t + 1])
    future = tokens.clone()
    future[:, -1] = (future[:, -1] + 1) % TINY.vocab
    torch.testing.assert_close(tok.decode(future)[:, :-1], recon[:, :-1], rtol=0, atol=1e-6)


def _moving_square(batch: int, frames: int) -> torch.Tensor:
    """Clips ``(B, T, 16, 16, 1)`` uint8 of a 4 x 4 white square moving one pixel a frame."""
    video = torch.zeros(batch, frames, SIZE, SIZE, 1, dtype=torch.uint8)
    for b in range(batch):
        y, x = (b * 5) % 12, (b * 3) % 12
        for t in range(frames):
            xx = (x + t) % 12
            video[b, t, y : y + 4, xx : xx + 4] = 255
    return video


def test_tokenizer_reconstruction_loss_falls_on_a_moving_square() -> None:
    cfg = dataclasses.replace(TINY, vocab=32, dead_code_every=20)
    tok = VideoTokenizer(cfg, SIZE, 1, FRAMES).train()
    opt = torch.optim.Adam(tok.parameters(), lr=3e-3)
    video = _moving_square(8, FRAMES)
    losses = []
    for _ in range(200):
        loss, metrics = tok.loss(video)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(metrics["train/loss/tokenizer/mse"]))
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    black = float((video.float() / 255).pow(2).mean())  # the error of an all-black guess
    assert last < 0.5 * first and last < 0.6 * black, (first, last, black)
    assert set(metrics) >= {"train/loss/tokenizer/total", "train/loss/tokenizer/commitment"}


def test_tokenizer_ema_codebook_trains_without_codebook_gradients() -> None:
    cfg = dataclasses.replace(TINY, codebook="ema")
    tok = VideoTokenizer(cfg, SIZE, 1, FRAMES).train()
    before = tok.vq.codebook.detach().clone()
    loss, _ = tok.loss(_moving_square(2, FRAMES))
    loss.backward()
    assert tok.vq.codebook.grad is None
    assert not torch.equal(tok.vq.codebook, before)
    assert tok.embed.weight.grad is not None and tok.embed.weight.grad.abs().sum() > 0


def test_tokenizer_refuses_bad_frames() -> None:
    tok = VideoTokenizer(TINY, SIZE, 3, FRAMES)
    with pytest.raises(ValueError, match=r"\(B, T, 16, 16, 3\)"):
        tok.tokenize(torch.zeros(1, 2, 3, SIZE, SIZE))
    with pytest.raises(ValueError, match=r"1\.\.4"):
        tok.tokenize(torch.zeros(1, 5, SIZE, SIZE, 3))
    with pytest.raises(ValueError, match="patch=5 must divide the frame side 16"):
        VideoTokenizer(dataclasses.replace(TINY, patch=5), SIZE)


# -- config -----------------------------------------------------------------------------------


def test_default_config_is_valid_and_mid_sized() -> None:
    cfg = GenieConfig()
    assert check_config(cfg, image_size=64) == []
    tok = VideoTokenizer(cfg.tokenizer, 64, 3, cfg.frames)
    params = sum(p.numel() for p in tok.parameters())
    assert 1e6 < params < 1e8, params
    assert tok.tokens == 256 and tok.vq.vocab == 1024 and tok.vq.dim == 32


def test_config_errors_name_the_bad_key_and_value() -> None:
    cfg = GenieConfig()
    bad = dataclasses.replace(
        cfg,
        tokenizer=dataclasses.replace(cfg.tokenizer, encoder=STConfig(250, 2, 4)),
        dynamics=dataclasses.replace(cfg.dynamics, mask_min=0.9, mask_max=0.6),
    )
    with pytest.raises(ValueError) as err:
        validate(bad, image_size=64)
    msg = str(err.value)
    assert "genie.tokenizer.encoder.heads=4 (must divide genie.tokenizer.encoder.width=250)" in msg
    assert "genie.dynamics.mask_min=0.9" in msg
    patch = dataclasses.replace(cfg, lam=dataclasses.replace(cfg.lam, patch=12))
    assert check_config(patch, image_size=64) == [
        "genie.lam.patch=12 (must divide the frame side 64)"
    ]
    for change, expected in (
        ({"frames": 1}, "genie.frames=1"),
        ({"tokenizer": dataclasses.replace(cfg.tokenizer, vocab=0)}, "genie.tokenizer.vocab=0"),
        ({"tokenizer": dataclasses.replace(cfg.tokenizer, ema_decay=2.0)}, "ema_decay=2.0"),
        ({"dynamics": dataclasses.replace(cfg.dynamics, temperature=0.0)}, "temperature=0.0"),
        ({"tokenizer": dataclasses.replace(cfg.tokenizer, codebook="x")}, "codebook='x'"),
    ):
        with pytest.raises(ValueError, match=re.escape(expected)):
            validate(dataclasses.replace(cfg, **change))  # type: ignore[arg-type]


def test_vq_state_dict_round_trip_keeps_codes_and_the_reset_schedule() -> None:
    vq = VectorQuantizer(4, 3, codebook="ema", dead_code_every=3).train()
    z = torch.randn(16, 3)
    vq(z)
    vq(z)
    copy = VectorQuantizer(4, 3, codebook="ema", dead_code_every=3).train()
    copy.load_state_dict(vq.state_dict())
    assert torch.equal(copy.nearest(z), vq.nearest(z))
    assert "dead_reset" in copy(z).metrics  # the third call since the start checks
