"""Configuration of IRIS (Micheli, Alonso, Fleuret, ICLR 2023): the ``iris`` section.

The defaults are the paper's settings (its public ``config/*.yaml``) except where the family
README says otherwise; ``configs/iris.yaml`` selects the family with the paper's replay batch
(64 x 20) and train ratio, ``configs/iris_debug.yaml`` shrinks every network for CPU smoke runs.
The agent reads ``config.iris``, ``config.run.seed``, ``config.run.device``,
``config.replay.batch_size`` and ``config.replay.seq_len``. Imports neither torch nor
``wm_ray.config``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Literal, Protocol

from wm_ray.types import Ranges

if TYPE_CHECKING:  # wm_ray.config imports this module to add the ``iris`` section
    from wm_ray.config import ReplayConfig, RunConfig


@dataclass(frozen=True)
class TokenizerConfig:
    """The discrete autoencoder: frames -> a grid of ``tokens`` codes from ``vocab`` entries."""

    RANGES: ClassVar[Ranges] = {
        **dict.fromkeys(("res_blocks", "dead_code_every", "batch_frames"), (0, None)),
        "ema_decay": (0, 1),
    }

    vocab: int = 512
    """Codebook entries."""
    embed_dim: int = 512
    """Size of each codebook vector."""
    tokens: int = 16
    """Tokens per frame: a square grid (16 = 4 x 4 for 64 x 64 frames)."""
    channels: int = 64
    """Channels of every conv stage of the encoder and decoder."""
    res_blocks: int = 2
    """Residual blocks per resolution stage."""
    attn_resolutions: tuple[int, ...] = (8, 16)
    """Resolutions with a self-attention block after the residual blocks."""
    codebook: Literal["grad", "ema"] = "grad"
    """grad: codebook loss ||sg(z) - e||^2 (the paper); ema: EMA k-means updates instead."""
    beta: float = 1.0
    """Commitment loss weight ||z - sg(e)||^2 (IRIS: 1.0)."""
    ema_decay: float = 0.99
    """EMA codebook: decay of the cluster sizes and sums."""
    l1: float = 1.0
    """Weight of the L1 reconstruction loss (pixels in [0, 1])."""
    l2: float = 1.0
    """Weight of the L2 reconstruction loss."""
    perceptual: float = 1.0
    """Weight of the perceptual loss; used only when ``perceptual_weights`` names a file."""
    perceptual_weights: str = ""
    """Path to VGG16 (+ optional LPIPS linear-layer) weights; empty: no perceptual loss."""
    dead_code_every: int = 200
    """Updates between dead-code resets (0: never)."""
    dead_code_threshold: float = 1e-3
    """A code whose EMA usage share falls below threshold / vocab is re-seeded from the batch."""
    batch_frames: int = 256
    """Frames per tokenizer update, drawn from the replayed batch (0: all B * T frames)."""
    lr: float = 1e-4
    clip: float = 10.0
    """Global gradient-norm clip."""


@dataclass(frozen=True)
class WorldModelConfig:
    """The GPT-style transformer over ``[z_t^1 .. z_t^K, a_t]`` blocks."""

    RANGES: ClassVar[Ranges] = {"dropout": (0, 1)}

    layers: int = 10
    heads: int = 4
    embed_dim: int = 256
    dropout: float = 0.1
    """Embedding, attention and residual dropout."""
    context: int = 20
    """Blocks (frames) a token may attend to, in training and in imagination (KV cache size)."""
    reward: Literal["sign", "twohot"] = "sign"
    """sign: 3 classes (-1, 0, +1) as in the paper; twohot: symlog two-hot regression."""
    bins: int = 255
    """Two-hot bins (reward = twohot)."""
    lr: float = 1e-4
    weight_decay: float = 0.01
    """Decoupled weight decay on the linear and attention weights (not norms or embeddings)."""
    clip: float = 10.0


@dataclass(frozen=True)
class ActorCriticConfig:
    """CNN + LSTM actor-critic trained in imagination on reconstructed frames."""

    RANGES: ClassVar[Ranges] = {
        "burn_in": (0, None),
        "gamma": (0, 1),
        "lam": (0, 1),
        "epsilon": (0, 1),
    }

    cnn_depth: int = 32
    """Channels of the four conv + max-pool stages: d, d, 2d, 2d."""
    lstm: int = 512
    """LSTM units."""
    horizon: int = 20
    """Imagined steps per start frame."""
    gamma: float = 0.995
    lam: float = 0.95
    entropy: float = 0.001
    """Entropy bonus weight."""
    burn_in: int = 19
    """Real (reconstructed) frames fed to the LSTM before imagination; <= replay.seq_len - 1."""
    temperature: float = 1.0
    """Imagination: temperature of the world model's token sampling."""
    epsilon: float = 0.01
    """Acting (explore): probability of a uniformly random action."""
    eval_temperature: float = 0.5
    """Acting (eval): policy temperature (IRIS samples at 0.5); 0 takes the most likely action."""
    lr: float = 1e-4
    clip: float = 10.0


@dataclass(frozen=True)
class ScheduleConfig:
    """When each part starts training, in agent updates (``train`` calls). Once started, a part
    trains on every update. IRIS starts them after 5 / 25 / 50 epochs of 200 steps, i.e. after
    0 / 4,000 / 9,000 updates counted from the first one (its replay starts after 1,000 steps)."""

    RANGES: ClassVar[Ranges] = {"world_model": (0, None), "actor_critic": (0, None)}

    tokenizer: int = 0
    world_model: int = 4_000
    actor_critic: int = 9_000


@dataclass(frozen=True)
class IrisConfig:
    """The ``iris`` section."""

    tokenizer: TokenizerConfig = field(default_factory=TokenizerConfig)
    world_model: WorldModelConfig = field(default_factory=WorldModelConfig)
    ac: ActorCriticConfig = field(default_factory=ActorCriticConfig)
    start: ScheduleConfig = field(default_factory=ScheduleConfig)


class RootConfig(Protocol):
    """What the agent reads from the root ``wm_ray.config.Config``."""

    @property
    def run(self) -> RunConfig: ...

    @property
    def replay(self) -> ReplayConfig: ...

    @property
    def iris(self) -> IrisConfig: ...


def validate(config: RootConfig) -> None:
    """The registry's validator: :func:`check_config` of the root config's section."""
    check_config(config.iris, config.replay.seq_len)


def check_config(config: IrisConfig, seq_len: int | None = None) -> None:
    """Raise ``ValueError`` naming every out-of-range setting of ``config``."""
    tok, wm, ac, start = config.tokenizer, config.world_model, config.ac, config.start
    positive = {
        "tokenizer.vocab": tok.vocab,
        "tokenizer.embed_dim": tok.embed_dim,
        "tokenizer.tokens": tok.tokens,
        "tokenizer.channels": tok.channels,
        "tokenizer.lr": tok.lr,
        "world_model.layers": wm.layers,
        "world_model.heads": wm.heads,
        "world_model.embed_dim": wm.embed_dim,
        "world_model.context": wm.context,
        "world_model.lr": wm.lr,
        "ac.cnn_depth": ac.cnn_depth,
        "ac.lstm": ac.lstm,
        "ac.horizon": ac.horizon,
        "ac.temperature": ac.temperature,
        "ac.lr": ac.lr,
    }
    bad = [f"iris.{k}={v} (must be > 0)" for k, v in positive.items() if v <= 0]
    nonneg = {
        "tokenizer.res_blocks": tok.res_blocks,
        "tokenizer.beta": tok.beta,
        "tokenizer.l1": tok.l1,
        "tokenizer.l2": tok.l2,
        "tokenizer.perceptual": tok.perceptual,
        "tokenizer.dead_code_every": tok.dead_code_every,
        "tokenizer.dead_code_threshold": tok.dead_code_threshold,
        "tokenizer.batch_frames": tok.batch_frames,
        "tokenizer.clip": tok.clip,
        "world_model.weight_decay": wm.weight_decay,
        "world_model.clip": wm.clip,
        "ac.entropy": ac.entropy,
        "ac.burn_in": ac.burn_in,
        "ac.eval_temperature": ac.eval_temperature,
        "ac.clip": ac.clip,
        "start.tokenizer": start.tokenizer,
        "start.world_model": start.world_model,
        "start.actor_critic": start.actor_critic,
    }
    bad += [f"iris.{k}={v} (must be >= 0)" for k, v in nonneg.items() if v < 0]
    unit = {
        "tokenizer.ema_decay": tok.ema_decay,
        "world_model.dropout": wm.dropout,
        "ac.epsilon": ac.epsilon,
    }
    bad += [f"iris.{k}={v} (must be in [0, 1))" for k, v in unit.items() if not 0 <= v < 1]
    closed = {"ac.gamma": ac.gamma, "ac.lam": ac.lam}
    bad += [f"iris.{k}={v} (must be in [0, 1])" for k, v in closed.items() if not 0 <= v <= 1]
    side = round(tok.tokens**0.5)
    if side * side != tok.tokens or side & (side - 1):
        bad.append(f"iris.tokenizer.tokens={tok.tokens} (must be a square of a power of 2)")
    if wm.embed_dim % wm.heads or (wm.embed_dim // max(wm.heads, 1)) % 2:
        bad.append(
            f"iris.world_model.embed_dim={wm.embed_dim} (must be heads={wm.heads} times an even "
            "head size)"
        )
    if wm.reward == "twohot" and wm.bins < 2:
        bad.append(f"iris.world_model.bins={wm.bins} (must be >= 2)")
    if seq_len is not None and ac.burn_in > seq_len - 1:
        bad.append(
            f"iris.ac.burn_in={ac.burn_in} (must be <= replay.seq_len - 1 = {seq_len - 1}: the "
            "last frame of each replayed sequence starts imagination)"
        )
    if bad:
        raise ValueError("invalid iris config: " + "; ".join(bad))
