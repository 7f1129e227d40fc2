"""Genie's latent action model (LAM; Bruce et al. 2024, section 2.1 and figure 5).

The LAM learns, without action labels, a small discrete vocabulary of actions between
consecutive frames: a VQ-VAE whose code for the transition ``t -> t + 1`` is whatever a decoder
needs, besides frames ``<= t``, to reconstruct frame ``t + 1``.

- **Encoder**: the clip ``x_0 .. x_{T-1}`` cut into ``patch x patch`` patches, a Linear, a
  causal ST transformer; its output at frame ``t + 1`` (which has seen frames ``0 .. t + 1``)
  is mean-pooled over space and projected to ``code_dim``, and the VQ (``vocab`` codes, 8 in the
  paper) quantizes it to the latent action ``a_t``. ``T`` frames give ``T - 1`` actions.
- **Decoder**: frames ``x_0 .. x_{T-2}`` patched and embedded, ``a_t``'s code vector projected to
  the width and added to every token of frame ``t``, a causal ST transformer, a Linear back to
  patches: its output at frame ``t`` is the prediction of ``x_{t+1}`` (pixel MSE). Because the
  decoder is causal it has frames ``<= t`` and actions ``<= t`` only, so the information about
  ``x_{t+1}`` that the past does not hold has to pass through the 8-way bottleneck ``a_t``.

The paper's decoder also sees all previous frames and actions (the seed's "mask all but the
first frame" is not the paper's, ``SEEDS_INVENTORY.md`` §6d.36), and the seed's "auxiliary
variance loss" is not used. The codes go to the dynamics model as integers
(:meth:`LatentActionModel.infer`), so the dynamics' loss never reaches the LAM (the paper's
stop-gradient). Pixels are in [-1, 1] inside, [0, 1] at the interface, layout
``(B, T, H, W, C)``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from wm_ray import metrics as M
from wm_ray.models.genie.config import LatentActionConfig
from wm_ray.models.genie.st_transformer import STTransformer
from wm_ray.models.genie.tokenizer import patch_grid, patchify, to_unit, unpatchify
from wm_ray.models.genie.vq import Quantized, VectorQuantizer

LAM = "lam"


class LatentActionModel(nn.Module):
    """Infers one of ``cfg.vocab`` latent actions between each pair of consecutive frames.

    Args:
        cfg: the ``genie.lam`` section.
        image_size: frame side ``H = W`` (divisible by ``cfg.patch``).
        channels: frame channels ``C``.
        max_frames: the most frames a clip may have (at least 2).
    """

    def __init__(
        self,
        cfg: LatentActionConfig,
        image_size: int = 64,
        channels: int = 3,
        max_frames: int = 16,
    ) -> None:
        super().__init__()
        self.tokens, pixels = patch_grid("genie.lam", cfg.patch, image_size, channels)
        if max_frames < 2:
            raise ValueError(f"max_frames={max_frames} must be >= 2 (a frame and its successor)")
        self.cfg, self.image_size, self.channels = cfg, image_size, channels
        self.patch, self.max_frames = cfg.patch, max_frames
        enc, dec = cfg.encoder, cfg.decoder
        self.embed = nn.Linear(pixels, enc.width)
        self.encoder = STTransformer(enc, self.tokens, max_frames)
        self.to_code = nn.Linear(enc.width, cfg.code_dim)
        self.vq = VectorQuantizer(
            cfg.vocab,
            cfg.code_dim,
            "grad",
            cfg.beta,
            cfg.ema_decay,
            cfg.dead_code_every,
            cfg.dead_code_threshold,
        )
        self.dec_embed = nn.Linear(pixels, dec.width)
        self.from_code = nn.Linear(cfg.code_dim, dec.width)
        self.decoder = STTransformer(dec, self.tokens, max_frames - 1)
        self.to_pixels = nn.Linear(dec.width, pixels)

    @property
    def vocab(self) -> int:
        """The number of latent actions."""
        return self.cfg.vocab

    def _check(self, video: Tensor) -> None:
        s, c = self.image_size, self.channels
        if video.ndim != 5 or tuple(video.shape[2:]) != (s, s, c):
            raise ValueError(f"expected frames (B, T, {s}, {s}, {c}), got {tuple(video.shape)}")
        if not 2 <= video.shape[1] <= self.max_frames:
            raise ValueError(f"clip of {video.shape[1]} frames (must be 2..{self.max_frames})")

    def encode(self, video: Tensor) -> Tensor:
        """Frames ``(B, T, H, W, C)`` -> continuous actions ``(B, T - 1, code_dim)``; action
        ``t`` depends on frames ``<= t + 1`` only."""
        self._check(video)
        x = patchify(to_unit(video) * 2.0 - 1.0, self.patch)
        h = self.encoder(self.embed(x))  # (B, T, N, D)
        return self.to_code(h[:, 1:].mean(dim=2))

    def quantize(self, video: Tensor) -> Quantized:
        """The VQ of :meth:`encode`'s actions (codes ``(B, T - 1)``); in training mode the
        codebook statistics are updated."""
        return self.vq(self.encode(video))

    def decode(self, video: Tensor, z_q: Tensor) -> Tensor:
        """Predictions of frames ``1 .. T - 1`` ``(B, T - 1, H, W, C)`` in [0, 1] space
        (unclamped) from frames ``0 .. T - 2`` of ``video (B, T, H, W, C)`` and the action code
        vectors ``z_q (B, T - 1, code_dim)``; prediction ``t`` uses frames and actions ``<= t``."""
        self._check(video)
        past = patchify(to_unit(video[:, :-1]) * 2.0 - 1.0, self.patch)
        x = self.dec_embed(past) + self.from_code(z_q)[:, :, None, :]
        y = self.to_pixels(self.decoder(x))
        return (unpatchify(y, self.patch, self.image_size, self.image_size) + 1.0) / 2.0

    @torch.no_grad()
    def infer(self, video: Tensor) -> Tensor:
        """Frames ``(B, T, H, W, C)`` -> latent actions ``(B, T - 1)`` int64 in ``[0, vocab)``
        (no statistics update; no gradient: what the dynamics model is given)."""
        return self.vq.nearest(self.encode(video))

    @torch.no_grad()
    def predict(self, video: Tensor, actions: Tensor | None = None) -> Tensor:
        """The decoder's next frames ``(B, T - 1, H, W, C)`` in [0, 1] given the clip's past and
        ``actions (B, T - 1)`` int64 (default: the inferred ones)."""
        if actions is None:
            actions = self.infer(video)
        if actions.shape != (video.shape[0], video.shape[1] - 1):
            raise ValueError(
                f"expected actions (B, T - 1) = {(video.shape[0], video.shape[1] - 1)}, got "
                f"{tuple(actions.shape)}"
            )
        if actions.numel() and not 0 <= int(actions.min()) <= int(actions.max()) < self.vocab:
            raise ValueError(f"latent actions must be in [0, {self.vocab}), got {actions}")
        return self.decode(video, self.vq.lookup(actions)).clamp(0.0, 1.0)

    def loss(self, video: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The LAM loss on a clip ``(B, T, H, W, C)``, ``T >= 2``: MSE of the reconstructed
        frames ``1 .. T - 1`` through the straight-through actions, plus the VQ's commitment and
        codebook losses. In training mode the codebook statistics (usage, dead codes) update.

        Returns:
            The scalar loss and detached 0-dim metrics: ``train/loss/lam/<term>`` for ``mse``,
            ``commitment``, ``codebook`` and ``total``; diagnostics ``usage``, ``perplexity``
            (of the actions in the batch) and, when checked, ``dead_reset``.
        """
        q = self.quantize(video)
        target = to_unit(video[:, 1:])
        mse = (self.decode(video, q.z_q) - target).pow(2).mean()
        total = mse + q.loss
        metrics = {M.loss(LAM): total.detach(), M.loss(LAM, "mse"): mse.detach()}
        for name in ("commitment", "codebook"):
            metrics[M.loss(LAM, name)] = q.metrics[name]
        for name in ("usage", "perplexity", "dead_reset"):
            if name in q.metrics:
                metrics[M.diagnostic(LAM, name)] = q.metrics[name]
        return total, metrics
