"""The IRIS tokenizer (VQ-VAE) and its LPIPS-style perceptual loss, on tiny configs.

The perceptual tests use a *randomly initialized* VGG16 saved in torchvision's naming
(:func:`save_random_vgg`): tests cannot download the real ImageNet weights, and the properties
checked here (zero for identical images, positive otherwise, gradients, file validation) do not
depend on them.
"""

from __future__ import annotations

import dataclasses
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from wm_ray.models.common import Optimizer
from wm_ray.models.iris.config import TokenizerConfig
from wm_ray.models.iris.losses import tokenizer_loss
from wm_ray.models.iris.perceptual import PerceptualLoss, expected_shapes, lin_shapes
from wm_ray.models.iris.tokenizer import Tokenizer

TINY = TokenizerConfig(
    vocab=32,
    embed_dim=16,
    tokens=16,
    channels=8,
    res_blocks=1,
    attn_resolutions=(8,),
    dead_code_every=0,
    lr=2e-3,
)
SIZE = 32


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny convs run fastest on one thread (and do not fight other processes for cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(**changes: object) -> TokenizerConfig:
    return dataclasses.replace(TINY, **changes)  # type: ignore[arg-type]


def rectangles(n: int, size: int = SIZE, seed: int = 0) -> torch.Tensor:
    """``(n, 3, size, size)`` frames in [0, 1]: a dark background with two coloured rectangles
    (a "paddle" moving down the left edge and a "block" moving right), like a tiny video."""
    gen = torch.Generator().manual_seed(seed)
    frames = torch.full((n, 3, size, size), 0.1)
    colors = torch.rand(2, 3, generator=gen) * 0.6 + 0.4
    for i in range(n):
        top = (i * 3) % (size - 10)
        frames[i, :, top : top + 10, 2:6] = colors[0].view(3, 1, 1)
        left = (i * 5) % (size - 12)
        frames[i, :, 18:26, left : left + 12] = colors[1].view(3, 1, 1)
    return frames


def save_random_vgg(path: Path, lpips: bool = False, seed: int = 0) -> Path:
    """A random VGG16 (+ optional LPIPS linear layers) in the naming :meth:`from_file` reads."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in expected_shapes().items():
        if key.endswith("weight"):
            fan_in = shape[1] * shape[2] * shape[3]
            state[key] = torch.randn(shape, generator=gen) * (2.0 / fan_in) ** 0.5
        else:
            state[key] = torch.zeros(shape)
    if lpips:
        for key, shape in lin_shapes().items():
            state[key] = torch.rand(shape, generator=gen)
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_random_vgg(tmp_path_factory.mktemp("vgg") / "vgg16.pt")


def recon_mse(tok: Tokenizer, frames: torch.Tensor) -> float:
    return float((tok.encode_decode(frames) - frames).pow(2).mean())


# -- interface ---------------------------------------------------------------------------------


def test_preprocess_maps_uint8_channels_last_to_unit_float_channels_first() -> None:
    image = torch.randint(0, 256, (2, 5, SIZE, SIZE, 3), dtype=torch.uint8)
    image[0, 0, 0, 0] = torch.tensor([0, 255, 51], dtype=torch.uint8)
    x = Tokenizer.preprocess(image)
    assert x.shape == (2, 5, 3, SIZE, SIZE) and x.dtype == torch.float32
    assert x[0, 0, :, 0, 0].tolist() == pytest.approx([0.0, 1.0, 0.2])
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


@pytest.mark.parametrize("channels", [3, 1])
def test_shapes_dtypes_and_token_layout(channels: int) -> None:
    torch.manual_seed(0)
    tok = Tokenizer(TINY, image_size=SIZE, channels=channels)
    assert (tok.vocab, tok.tokens, tok.grid, tok.channels) == (32, 16, 4, channels)
    assert tok.image_size == SIZE and tok.cfg is TINY
    x = torch.rand(3, channels, SIZE, SIZE)
    z_e = tok.encode(x)
    assert z_e.shape == (3, 16, 4, 4) and z_e.dtype == torch.float32
    z_q, idx = tok.quantize(z_e)
    assert z_q.shape == (3, 16, 4, 4) and idx.shape == (3, 16) and idx.dtype == torch.int64
    assert int(idx.min()) >= 0 and int(idx.max()) < 32
    # Row-major grid: token r * g + c holds the code of cell (r, c), the nearest one.
    book = tok.codebook.detach()
    for r, c in [(0, 0), (0, 3), (2, 1), (3, 3)]:
        assert torch.equal(z_q[:, :, r, c], book[idx[:, r * 4 + c]])
        nearest = torch.cdist(z_e[:, :, r, c], book).argmin(dim=1)
        assert torch.equal(idx[:, r * 4 + c], nearest)
    lead = torch.randint(0, 32, (2, 5, 16))
    assert tok.embed(lead).shape == (2, 5, 16, 4, 4)
    out = tok.decode(lead)
    assert out.shape == (2, 5, channels, SIZE, SIZE) and out.dtype == torch.float32
    frames = torch.rand(2, 4, channels, SIZE, SIZE)
    tokens = tok.tokenize(frames)
    assert tokens.shape == (2, 4, 16) and tokens.dtype == torch.int64
    assert torch.equal(tokens[1, 2], tok.quantize(tok.encode(frames[1, 2:3]))[1][0])
    assert tok.tokenize(frames[0, 0]).shape == (16,)
    rec = tok.encode_decode(frames)
    assert rec.shape == frames.shape and float(rec.min()) >= 0.0 and float(rec.max()) <= 1.0
    assert torch.allclose(rec, tok.decode(tokens).clamp(0, 1))
    with pytest.raises(ValueError, match="expected frames"):
        tok.encode(torch.rand(1, channels, SIZE // 2, SIZE // 2))


def test_loss_returns_a_scalar_and_the_documented_metrics() -> None:
    torch.manual_seed(0)
    tok = Tokenizer(TINY, image_size=SIZE)
    loss, metrics = tokenizer_loss(tok, rectangles(4))
    assert loss.shape == () and loss.requires_grad
    terms = {"total", "l1", "l2", "commitment", "codebook"}
    want = {f"train/loss/tokenizer/{k}" for k in terms}
    assert set(metrics) == want | {"train/tokenizer/usage", "train/tokenizer/perplexity"}
    assert all(v.shape == () and not v.requires_grad for v in metrics.values())
    assert 0 < float(metrics["train/tokenizer/usage"]) <= 1
    assert 1 <= float(metrics["train/tokenizer/perplexity"]) <= 32


def test_usage_and_perplexity_of_a_collapsed_codebook() -> None:
    torch.manual_seed(0)
    tok = Tokenizer(TINY, image_size=SIZE)
    with torch.no_grad():
        tok.codebook[1:] = 1e3  # every vector is nearest to code 0
    _, metrics = tokenizer_loss(tok, torch.rand(4, 3, SIZE, SIZE))
    assert float(metrics["train/tokenizer/usage"]) == pytest.approx(1 / 32)
    assert float(metrics["train/tokenizer/perplexity"]) == pytest.approx(1.0)


@pytest.mark.parametrize("mode", ["grad", "ema"])
def test_straight_through_gradient_reaches_the_encoder(mode: str) -> None:
    torch.manual_seed(0)
    # Only the reconstruction term: the encoder can get a gradient only through the
    # straight-through estimator (the commitment term is switched off).
    tok = Tokenizer(tiny(codebook=mode, beta=0.0), image_size=SIZE)
    loss, _ = tokenizer_loss(tok, rectangles(4))
    loss.backward()
    for name in ("encoder", "decoder"):
        grads = [p.grad for p in getattr(tok, name).parameters()]
        assert all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads if g is not None) > 0, name
    if mode == "grad":
        assert tok.codebook.grad is not None and float(tok.codebook.grad.abs().sum()) > 0
    else:
        assert not tok.codebook.requires_grad and tok.codebook.grad is None


# -- training ----------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["grad", "ema"])
def test_training_lowers_the_reconstruction_error(mode: str) -> None:
    torch.manual_seed(0)
    cfg = tiny(codebook=mode, dead_code_every=10)
    tok = Tokenizer(cfg, image_size=SIZE)
    frames = rectangles(12)
    before = recon_mse(tok, frames)
    mean_frame = float((frames - frames.mean(0, keepdim=True)).pow(2).mean())
    opt = Optimizer(tok.parameters(), lr=cfg.lr, clip=cfg.clip)
    for _ in range(40):
        loss, _ = tokenizer_loss(tok, frames)
        opt.step(loss)
    after = recon_mse(tok, frames)
    assert after < 0.1 * before, (before, after)
    assert after < mean_frame, "it must encode where the rectangles are, not only the mean"


def test_ema_mode_moves_the_codebook_without_gradients_or_codebook_loss() -> None:
    torch.manual_seed(0)
    tok = Tokenizer(tiny(codebook="ema", ema_decay=0.5), image_size=SIZE)
    assert not tok.codebook.requires_grad
    opt = Optimizer(tok.parameters(), lr=1e-3)
    assert all(p is not tok.codebook for p in opt.params)
    frames = rectangles(8)
    tok.eval()
    start = tok.codebook.detach().clone()
    tokenizer_loss(tok, frames)
    assert torch.equal(tok.codebook, start), "eval mode must not touch the codebook"
    tok.train()
    with torch.no_grad():
        z_e = tok.encode(frames)
        _, idx = tok.quantize(z_e)
    flat = z_e.permute(0, 2, 3, 1).reshape(-1, 16)
    used = idx.reshape(-1).unique()
    gap_before = torch.stack([(flat[idx.reshape(-1) == c].mean(0) - start[c]).norm() for c in used])
    loss, metrics = tokenizer_loss(tok, frames)
    assert float(metrics["train/loss/tokenizer/codebook"]) == 0.0
    opt.step(loss)
    assert tok.codebook.grad is None
    moved = tok.codebook.detach()
    gap_after = torch.stack([(flat[idx.reshape(-1) == c].mean(0) - moved[c]).norm() for c in used])
    assert bool((gap_after < gap_before).all()), "used codes move toward their assigned outputs"
    unused = torch.ones(32, dtype=torch.bool)
    unused[used] = False
    assert torch.allclose(moved[unused], start[unused], atol=1e-6), "unused codes stay put"


@pytest.mark.parametrize("mode", ["grad", "ema"])
def test_dead_code_reset_revives_never_used_codes(mode: str) -> None:
    torch.manual_seed(0)
    tok = Tokenizer(tiny(codebook=mode, dead_code_every=4), image_size=SIZE)
    with torch.no_grad():
        tok.codebook[4:] = 50.0  # 28 codes no encoder output can reach
        if mode == "ema":
            tok.ema_embed_sum[4:] = 50.0
    frames = torch.rand(8, 3, SIZE, SIZE)
    first = None
    for call in range(1, 5):
        _, metrics = tokenizer_loss(tok, frames)
        first = first if first is not None else float(metrics["train/tokenizer/usage"])
        assert ("train/tokenizer/dead_reset" in metrics) == (call == 4)
    assert first is not None and first <= 4 / 32
    assert float(metrics["train/tokenizer/dead_reset"]) >= 28 - 1e-6
    assert float(tok.codebook.detach()[4:].abs().max()) < 50.0, "dead rows were re-seeded"
    _, metrics = tokenizer_loss(tok, frames)
    assert float(metrics["train/tokenizer/usage"]) > 2 * first


def test_dead_code_reset_never_runs_when_disabled() -> None:
    torch.manual_seed(0)
    tok = Tokenizer(tiny(dead_code_every=0), image_size=SIZE)
    with torch.no_grad():
        tok.codebook[4:] = 50.0
    for _ in range(5):
        _, metrics = tokenizer_loss(tok, torch.rand(4, 3, SIZE, SIZE))
        assert "train/tokenizer/dead_reset" not in metrics
    assert float(tok.codebook.detach()[4:].min()) == 50.0


def test_state_dict_round_trip_keeps_tokens_and_the_reset_schedule() -> None:
    torch.manual_seed(0)
    cfg = tiny(codebook="ema", dead_code_every=5)
    tok = Tokenizer(cfg, image_size=SIZE)
    opt = Optimizer(tok.parameters(), lr=cfg.lr)
    frames = rectangles(8)
    for _ in range(3):
        opt.step(tokenizer_loss(tok, frames)[0])
    state = tok.state_dict()
    assert {"codebook", "usage", "calls", "ema_cluster_size", "ema_embed_sum"} <= set(state)
    assert int(state["calls"]) == 3
    torch.manual_seed(1)
    other = Tokenizer(cfg, image_size=SIZE)
    assert not torch.equal(other.tokenize(frames), tok.tokenize(frames))
    other.load_state_dict(state)
    assert torch.equal(other.tokenize(frames), tok.tokenize(frames))
    for key, value in tok.state_dict().items():
        assert torch.equal(other.state_dict()[key], value), key
    # The call count came with the state: the 5th call (the 2nd after loading) checks.
    assert "train/tokenizer/dead_reset" not in tokenizer_loss(other, frames)[1]
    assert "train/tokenizer/dead_reset" in tokenizer_loss(other, frames)[1]


# -- perceptual loss ---------------------------------------------------------------------------


@pytest.mark.parametrize("lpips", [False, True])
def test_perceptual_distance_properties(tmp_path: Path, lpips: bool) -> None:
    path = save_random_vgg(tmp_path / "vgg.pt", lpips=lpips)
    perceptual = PerceptualLoss.from_file(path)
    assert not perceptual.training
    assert all(not p.requires_grad for p in perceptual.parameters())
    assert len(perceptual.lins) == (5 if lpips else 0)
    perceptual.train()
    assert not perceptual.training, "stays in eval mode"
    x = rectangles(2)
    assert torch.allclose(perceptual(x, x.clone()), torch.zeros(2), atol=1e-6)
    y = (x + 0.2 * torch.rand_like(x)).clamp(0, 1).requires_grad_(True)
    dist = perceptual(x, y)
    assert dist.shape == (2,) and bool((dist > 0).all())
    dist.sum().backward()
    assert y.grad is not None and float(y.grad.abs().sum()) > 0
    gray = perceptual(x[:, :1], y.detach()[:, :1])
    assert gray.shape == (2,) and bool((gray > 0).all())


def test_broken_perceptual_files_raise_value_error_naming_the_path(
    tmp_path: Path, vgg_file: Path
) -> None:
    missing = tmp_path / "nowhere.pt"
    with pytest.raises(ValueError, match=r"nowhere\.pt"):
        PerceptualLoss.from_file(missing)
    good = torch.load(vgg_file, weights_only=True)
    cases = {
        "no_key.pt": {k: v for k, v in good.items() if k != "features.10.weight"},
        "bad_shape.pt": {**good, "features.0.weight": torch.zeros(64, 3, 5, 5)},
        "partial_lin.pt": {**good, "lin0.model.1.weight": torch.zeros(1, 64, 1, 1)},
        "bad_lin.pt": {
            **good,
            **{k: torch.zeros(1, 7, 1, 1) for k in lin_shapes()},
        },
    }
    for name, state in cases.items():
        torch.save(state, tmp_path / name)
        with pytest.raises(ValueError, match=re.escape(name)) as info:
            PerceptualLoss.from_file(tmp_path / name)
        assert "features.10.weight" in str(info.value) or name != "no_key.pt"
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"junk\.pt"):
        PerceptualLoss.from_file(tmp_path / "junk.pt")


def test_tokenizer_uses_the_perceptual_loss_but_does_not_carry_it(vgg_file: Path) -> None:
    torch.manual_seed(0)
    plain = Tokenizer(TINY, image_size=SIZE)
    tok = Tokenizer(tiny(perceptual_weights=str(vgg_file), perceptual=0.5), image_size=SIZE)
    assert tok.perceptual_loss is not None and plain.perceptual_loss is None
    assert set(tok.state_dict()) == set(plain.state_dict())
    assert sum(p.numel() for p in tok.parameters()) == sum(p.numel() for p in plain.parameters())
    tok.load_state_dict(plain.state_dict())
    frames = rectangles(2)
    loss, metrics = tokenizer_loss(tok, frames)
    plain_loss, _ = tokenizer_loss(plain, frames)
    assert float(metrics["train/loss/tokenizer/perceptual"]) > 0
    assert float(loss.detach()) == pytest.approx(
        float(plain_loss.detach()) + 0.5 * float(metrics["train/loss/tokenizer/perceptual"]),
        rel=1e-4,
    )
    tok.double()  # follows dtype / device moves of the tokenizer
    assert tok.perceptual_loss.features[0].weight.dtype == torch.float64
    assert tokenizer_loss(tok, frames.double())[0].dtype == torch.float64
    off = Tokenizer(tiny(perceptual_weights=str(vgg_file), perceptual=0.0), image_size=SIZE)
    assert off.perceptual_loss is None


# -- data parallel -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _rank(rank: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    torch.manual_seed(0)  # same initial weights
    cfg = tiny(codebook="ema", dead_code_every=2)
    tok = Tokenizer(cfg, image_size=16)
    with torch.no_grad():
        tok.codebook[8:] = 50.0  # dead codes to re-seed (from each rank's own batch)
        tok.ema_embed_sum[8:] = 50.0
    opt = Optimizer(tok.parameters(), lr=cfg.lr)
    torch.manual_seed(100 + rank)  # each rank its own batches and random picks
    resets = []
    for _ in range(4):
        loss, metrics = tokenizer_loss(tok, torch.rand(4, 3, 16, 16))
        opt.step(loss)
        resets.append(float(metrics.get("train/tokenizer/dead_reset", -1)))
    torch.save({"state": tok.state_dict(), "resets": resets}, Path(out) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


@pytest.mark.slow  # two spawned processes: ~10 s on 2 CPU cores, mostly their start-up
def test_two_ranks_keep_identical_codebooks_and_statistics(tmp_path: Path) -> None:
    mp.start_processes(
        _rank, args=(_free_port(), str(tmp_path)), nprocs=2, start_method="spawn", join=True
    )
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in range(2))
    assert r0["resets"] == r1["resets"] and r0["resets"][1] >= 24
    for key, value in r0["state"].items():
        assert torch.equal(value, r1["state"][key]), key
