"""Genie's video tokenizer (Bruce et al. 2024, section 2.1): an ST-transformer VQ-VAE.

A clip ``(B, T, H, W, C)`` (uint8, or float in [0, 1]) is cut into ``patch x patch`` patches
(``N = (H / patch) * (W / patch)`` per frame, row-major), each patch is embedded by a Linear, an
ST encoder (:class:`~wm_ray.models.genie.st_transformer.STTransformer`, causal in time) and a
Linear to ``code_dim``, quantized to one of ``vocab`` codes (:class:`VectorQuantizer`), and an
ST decoder (causal too) maps the codes back to patches. Because every temporal attention is
causal and nothing else mixes frames, frame ``t``'s tokens depend on frames ``<= t`` only and
its reconstruction on the tokens of frames ``<= t`` only. The networks see pixels in [-1, 1];
the interface uses [0, 1] and keeps the layout ``(B, T, H, W, C)`` end to end.

Training (:meth:`VideoTokenizer.loss`): MSE reconstruction through the straight-through VQ,
plus the quantizer's commitment (and, in ``codebook=grad`` mode, codebook) loss.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from wm_ray import metrics as M
from wm_ray.models.genie.config import TokenizerConfig
from wm_ray.models.genie.st_transformer import STTransformer
from wm_ray.models.genie.vq import VectorQuantizer

TOKENIZER = "tokenizer"


def to_unit(video: Tensor) -> Tensor:
    """uint8 frames -> float32 in [0, 1]; float frames are taken as already in [0, 1]."""
    if video.dtype == torch.uint8:
        return video.float() / 255.0
    if not video.is_floating_point():
        raise ValueError(f"frames must be uint8 or float in [0, 1], got dtype {video.dtype}")
    return video


def patchify(x: Tensor, patch: int) -> Tensor:
    """Frames ``(B, T, H, W, C)`` -> patches ``(B, T, N, patch * patch * C)``, row-major."""
    b, t, h, w, c = x.shape
    x = x.reshape(b, t, h // patch, patch, w // patch, patch, c)
    return x.permute(0, 1, 2, 4, 3, 5, 6).reshape(b, t, (h // patch) * (w // patch), -1)


def unpatchify(x: Tensor, patch: int, height: int, width: int) -> Tensor:
    """Patches ``(B, T, N, patch * patch * C)`` -> frames ``(B, T, height, width, C)``."""
    b, t = x.shape[:2]
    gh, gw = height // patch, width // patch
    x = x.reshape(b, t, gh, gw, patch, patch, -1).permute(0, 1, 2, 4, 3, 5, 6)
    return x.reshape(b, t, height, width, -1)


def patch_grid(section: str, patch: int, image_size: int, channels: int) -> tuple[int, int]:
    """``(tokens per frame, values per patch)`` of ``image_size``-side frames of ``channels``
    cut in ``patch``-side patches; a ValueError names ``<section>.patch`` when it does not
    divide the side."""
    if patch < 1 or image_size < 1 or image_size % patch:
        raise ValueError(f"{section}.patch={patch} must divide the frame side {image_size}")
    if channels < 1:
        raise ValueError(f"channels={channels} must be >= 1")
    return (image_size // patch) ** 2, patch * patch * channels


class VideoTokenizer(nn.Module):
    """Clips ``(B, T, H, W, C)`` <-> tokens ``(B, T, N)`` from ``cfg.vocab`` codes.

    Args:
        cfg: the ``genie.tokenizer`` section.
        image_size: frame side ``H = W``; ``cfg.patch`` must divide it.
        channels: frame channels ``C`` (3 RGB, 1 grayscale).
        max_frames: the most frames a clip may have (``genie.frames``).

    Attributes:
        tokens: tokens per frame ``N = (image_size / patch)^2``.
        vq: the :class:`VectorQuantizer` (codebook ``(vocab, code_dim)``).
    """

    def __init__(
        self, cfg: TokenizerConfig, image_size: int = 64, channels: int = 3, max_frames: int = 16
    ) -> None:
        super().__init__()
        self.tokens, pixels = patch_grid("genie.tokenizer", cfg.patch, image_size, channels)
        self.cfg, self.image_size, self.channels = cfg, image_size, channels
        self.patch, self.max_frames = cfg.patch, max_frames
        enc, dec = cfg.encoder, cfg.decoder
        self.embed = nn.Linear(pixels, enc.width)
        self.encoder = STTransformer(enc, self.tokens, max_frames)
        self.to_code = nn.Linear(enc.width, cfg.code_dim)
        self.vq = VectorQuantizer(
            cfg.vocab,
            cfg.code_dim,
            cfg.codebook,
            cfg.beta,
            cfg.ema_decay,
            cfg.dead_code_every,
            cfg.dead_code_threshold,
        )
        self.from_code = nn.Linear(cfg.code_dim, dec.width)
        self.decoder = STTransformer(dec, self.tokens, max_frames)
        self.to_pixels = nn.Linear(dec.width, pixels)

    def _check(self, video: Tensor) -> None:
        s, c = self.image_size, self.channels
        if video.ndim != 5 or tuple(video.shape[2:]) != (s, s, c):
            raise ValueError(f"expected frames (B, T, {s}, {s}, {c}), got {tuple(video.shape)}")
        if not 1 <= video.shape[1] <= self.max_frames:
            raise ValueError(f"clip of {video.shape[1]} frames (must be 1..{self.max_frames})")

    def encode(self, video: Tensor) -> Tensor:
        """Frames ``(B, T, H, W, C)`` -> continuous ``z_e (B, T, N, code_dim)``."""
        self._check(video)
        x = patchify(to_unit(video) * 2.0 - 1.0, self.patch)
        return self.to_code(self.encoder(self.embed(x)))

    def decode_codes(self, z_q: Tensor) -> Tensor:
        """Code vectors ``(B, T, N, code_dim)`` -> frames ``(B, T, H, W, C)`` in [0, 1]
        space, unclamped."""
        y = self.to_pixels(self.decoder(self.from_code(z_q)))
        return (unpatchify(y, self.patch, self.image_size, self.image_size) + 1.0) / 2.0

    def decode(self, indices: Tensor) -> Tensor:
        """Tokens ``(B, T, N)`` int64 -> frames ``(B, T, H, W, C)`` in [0, 1] space,
        unclamped."""
        if indices.ndim != 3 or indices.shape[-1] != self.tokens:
            raise ValueError(f"expected tokens (B, T, {self.tokens}), got {tuple(indices.shape)}")
        return self.decode_codes(self.vq.lookup(indices))

    @torch.no_grad()
    def tokenize(self, video: Tensor) -> Tensor:
        """Frames ``(B, T, H, W, C)`` -> tokens ``(B, T, N)`` int64 (no statistics update)."""
        return self.vq.nearest(self.encode(video))

    @torch.no_grad()
    def reconstruct(self, video: Tensor) -> Tensor:
        """Frames ``(B, T, H, W, C)`` -> their reconstructions in [0, 1] (float32)."""
        return self.decode(self.tokenize(video)).clamp(0.0, 1.0)

    def loss(self, video: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The tokenizer loss on a clip ``(B, T, H, W, C)``: MSE reconstruction through the
        straight-through VQ plus the quantizer's loss. In training mode the quantizer's
        statistics (usage, EMA codebook, dead codes) are updated too.

        Returns:
            The scalar loss and detached 0-dim metrics (``train/loss/tokenizer/<term>`` for
            ``mse``, ``commitment``, ``codebook`` and the total; diagnostics ``usage``,
            ``perplexity`` and, when checked, ``dead_reset``).
        """
        target = to_unit(video)
        q = self.vq(self.encode(video))
        mse = (self.decode_codes(q.z_q) - target).pow(2).mean()
        total = mse + q.loss
        metrics = {M.loss(TOKENIZER): total.detach(), M.loss(TOKENIZER, "mse"): mse.detach()}
        for name in ("commitment", "codebook"):
            metrics[M.loss(TOKENIZER, name)] = q.metrics[name]
        for name in ("usage", "perplexity", "dead_reset"):
            if name in q.metrics:
                metrics[M.diagnostic(TOKENIZER, name)] = q.metrics[name]
        return total, metrics
