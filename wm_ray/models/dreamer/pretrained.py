"""A pretrained JEPA encoder as Dreamer's image encoder (``dreamer.encoder: jepa``).

The target encoder of a ``jepa`` run (issue 21; ``wm_ray/models/jepa``) is loaded from the
run's latest checkpoint through the registry (``create_model("jepa", ...)``, so this family
imports no other) and maps each frame to its patch features, concatenated: ``(..., N * D)``,
the embedding the RSSM reads (with the vector MLP's, when the env also gives a vector). Frozen
by default (``no_grad``, parameters not trained: the world model learns on top of the JEPA
representation), or trained with the world model (``dreamer.jepa_finetune``). The frames are
scaled as JEPA trained on them (``uint8 / 127.5 - 1``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from wm_ray.models.common.nets import MLP
from wm_ray.models.common.transforms import symlog


def load_jepa_encoder(run_dir: str, image_shape: tuple[int, ...]) -> nn.Module:
    """The target encoder of the ``jepa`` run in ``run_dir`` (its latest checkpoint), on the
    CPU; refused, naming the key, when the run is not a JEPA run or its frames differ."""
    from wm_ray.factory import create_model
    from wm_ray.rundir.open import open_checkpoint

    try:
        _, config, path = open_checkpoint(run_dir, "latest", "take the JEPA encoder from")
    except Exception as err:
        raise ValueError(f"dreamer.jepa_run={run_dir!r}: {err}") from None
    if config.run.model != "jepa":
        raise ValueError(
            f"dreamer.jepa_run={run_dir!r} is a {config.run.model!r} run; it must be a jepa run"
        )
    if config.env.image_size != image_shape[0]:
        raise ValueError(
            f"dreamer.jepa_run={run_dir!r} was trained on {config.env.image_size}-pixel frames "
            f"(its env.image_size), the env gives {tuple(image_shape)}"
        )
    config = dataclasses.replace(config, run=dataclasses.replace(config.run, device="cpu"))
    obs = gym.spaces.Dict({"image": gym.spaces.Box(0, 255, tuple(image_shape), np.uint8)})
    try:
        agent = create_model("jepa", obs, gym.spaces.Discrete(1), config)
    except ValueError as err:
        raise ValueError(
            f"dreamer.jepa_run={run_dir!r} does not fit the env's frames: {err}"
        ) from None
    try:
        agent.load(path / "agent")
    except (RuntimeError, ValueError) as err:  # e.g. another channel count: the patch size
        raise ValueError(
            f"dreamer.jepa_run={run_dir!r} does not fit the env's frames {tuple(image_shape)}: "
            f"{str(err).splitlines()[0]}"
        ) from None
    return agent.target


class JEPAEncoder(nn.Module):
    """Observations ``{image (..., H, W, C) uint8, vector (..., D)}`` -> ``(..., E)``: the JEPA
    run's patch features of the image (concatenated) and, with a vector, Dreamer's MLP."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], config: Any) -> None:
        super().__init__()
        if "image" not in shapes:
            raise ValueError("dreamer.encoder=jepa needs image observations")
        self.jepa = load_jepa_encoder(config.jepa_run, shapes["image"])
        self.finetune = bool(config.jepa_finetune)
        self.jepa.requires_grad_(self.finetune)
        pos = self.jepa.get_buffer("pos")  # fixed positions (patches, width)
        patches, width = pos.shape[-2:]
        self.out_dim = int(patches) * int(width)
        self.mlp: MLP | None = None
        if "vector" in shapes:
            self.mlp = MLP(shapes["vector"][0], None, config.units, config.layers)
            self.out_dim += self.mlp.out_dim

    def forward(self, obs: dict[str, torch.Tensor]) -> torch.Tensor:
        image = obs["image"]
        lead = image.shape[:-3]
        frames = image.reshape(-1, *image.shape[-3:]).float() / 127.5 - 1.0
        with torch.set_grad_enabled(self.finetune and torch.is_grad_enabled()):
            parts = [self.jepa(frames).flatten(1).reshape(*lead, -1)]
        if self.mlp is not None:
            parts.append(self.mlp(symlog(obs["vector"].float())))
        return torch.cat(parts, -1)
