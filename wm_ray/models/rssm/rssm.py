"""The recurrent state-space model (RSSM) of DreamerV3 (Hafner et al. 2023, sec. 2 and appendix).

State ``s_t = (h_t, z_t)``: ``h`` is the deterministic state of a LayerNorm GRU, ``z`` a sample
of ``G x C`` unimix categoricals (or, with ``latent="gaussian"``, the diagonal Gaussian of Dream
to Control, Hafner et al. 2020, with ``std = softplus(raw) + min_std``). One step::

    h_t = GRU(h_{t-1}, [z_{t-1}, a_{t-1}])          sequence model (run ONCE per step)
    z_t ~ p(z_t | h_t)                                  prior (dynamics predictor, "img")
    z_t ~ q(z_t | h_t, e_t)                             posterior (representation, "obs")

``e_t`` is the encoder's embedding of the observation. The GRU is the default sequence model;
any other implements :class:`~wm_ray.models.rssm.backbones.Backbone` (an LSTM, a transformer
over a window of past steps: ModularRSSM's ``modular.backbone``) and carries what it needs
beside ``h`` in ``State.memory``. ``a_{t-1}`` is the previous action
(one-hot for discrete spaces); where ``is_first`` is set, the state and the previous action are
reset to the initial state and zeros before the step. Distribution parameters ("stats") are raw
head outputs ``(..., S * C)`` (logits) or ``(..., 2 * S)`` (Gaussian mean and raw std).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from wm_ray.models.common import (
    CategoricalLatent,
    Features,
    OneHotInput,
    init_fan_avg_,
    onehot_matmul,
)
from wm_ray.models.common.noise import Source
from wm_ray.models.rssm.backbones import Backbone, Memory, NormGRUCell
from wm_ray.models.rssm.config import RSSMConfig
from wm_ray.models.rssm.latents import GaussianLatent, Latent, sample_onehot_index


class State(NamedTuple):
    """An RSSM state: ``deter (..., D)`` and the flattened stochastic sample ``stoch (..., Z)``.

    ``choice (..., S)``: the class of every categorical group when ``stoch`` is a one-hot sample
    the RSSM drew (set by the sampling steps; None where unknown, e.g. a hand-built state).
    With it, layers reading ``stoch`` gather weight columns instead of multiplying by the
    one-hot (:mod:`wm_ray.models.common.onehot`); results are the same.

    ``memory``: what the sequence model carries beside ``deter`` (:mod:`.backbones`: empty for
    the GRU, the LSTM's cell state, the transformer's window cache), each ``(..., ...)`` with
    the same leading dims as ``deter``.
    """

    deter: torch.Tensor
    stoch: torch.Tensor
    choice: torch.Tensor | None = None
    memory: Memory = ()

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> State:
        """Apply ``fn`` (detach, flatten, slice, repeat) to every field."""
        choice = None if self.choice is None else fn(self.choice)
        return State(fn(self.deter), fn(self.stoch), choice, tuple(fn(m) for m in self.memory))


def stack_states(states: list[State], dim: int = 1, memory: bool = False) -> State:
    """Stack states along a new ``dim``; the result has ``choice`` only if every state had one,
    and ``memory`` only if asked (imagination reads ``deter`` and ``stoch`` alone)."""
    choices = [s.choice for s in states if s.choice is not None]
    choice = torch.stack(choices, dim) if len(choices) == len(states) else None
    deter = torch.stack([s.deter for s in states], dim)
    stacked: Memory = ()
    if memory:
        stacked = tuple(torch.stack(parts, dim) for parts in zip(*(s.memory for s in states)))
    return State(deter, torch.stack([s.stoch for s in states], dim), choice, stacked)


def _where(first: torch.Tensor, new: State, old: State) -> State:
    """``new`` where ``first (N,)`` is set, else ``old`` (every field but ``choice``)."""

    def pick(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(first.reshape(-1, *[1] * (b.dim() - 1)), a, b)

    memory = tuple(pick(a, b) for a, b in zip(new.memory, old.memory))
    return State(pick(new.deter, old.deter), pick(new.stoch, old.stoch), None, memory)


def _norm_act(width: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(width), nn.SiLU())


class RSSM(nn.Module):
    """Prior, posterior and sequence model; see the module docstring.

    Args:
        config: sizes and latent type.
        embed_dim: size ``E`` of the observation embedding.
        action_dim: size ``A`` of the (one-hot) action.
        core: the sequence model (:mod:`.backbones`) taking ``config.hidden`` inputs to a
            ``config.deter`` state; None: DreamerV3's :class:`NormGRUCell`.
    """

    def __init__(
        self, config: RSSMConfig, embed_dim: int, action_dim: int, core: Backbone | None = None
    ) -> None:
        super().__init__()
        self.config = config
        cat = config.latent == "categorical"
        self.stoch_dim = config.stoch * config.classes if cat else config.stoch
        stats_dim = self.stoch_dim if cat else 2 * config.stoch
        hid, deter = config.hidden, config.deter
        # [z, a] -> hidden and [h, e] -> hidden are single Linear layers over a concatenation,
        # split by input so the action and embedding parts run batched over (B, T).
        self.img_in_stoch = nn.Linear(self.stoch_dim, hid, bias=False)
        self.img_in_action = nn.Linear(action_dim, hid, bias=False)
        self.img_in_norm = _norm_act(hid)
        self.core = NormGRUCell(hid, deter) if core is None else core
        if (self.core.in_dim, self.core.deter) != (hid, deter):
            raise ValueError(
                f"the RSSM's backbone maps {self.core.in_dim} -> {self.core.deter} features, "
                f"the RSSM needs {hid} -> {deter} (rssm.hidden -> rssm.deter)"
            )
        self.img_out = nn.Sequential(nn.Linear(deter, hid, bias=False), _norm_act(hid))
        self.img_stats = nn.Linear(hid, stats_dim)
        self.obs_deter = nn.Linear(deter, hid, bias=False)
        self.obs_embed = nn.Linear(embed_dim, hid, bias=False)
        self.obs_norm = _norm_act(hid)
        self.obs_stats = nn.Linear(hid, stats_dim)
        init_fan_avg_(self)
        self.init_deter: nn.Parameter | None = None
        if config.initial == "learned":
            self.init_deter = nn.Parameter(torch.zeros(deter))
        self._register_load_state_dict_pre_hook(_rename_gru)

    @property
    def feat_dim(self) -> int:
        """Size of :meth:`feat`: ``D + Z``."""
        return self.config.deter + self.stoch_dim

    def feat(self, state: State) -> torch.Tensor:
        """``(..., D + Z)``: the model state read by decoders, heads, actor and critic."""
        return torch.cat([state.deter, state.stoch], -1)

    def features(self, state: State) -> Features:
        """:meth:`feat` for the MLP heads, actor and critic: with the sample's classes when
        known (a :class:`OneHotInput`: the same outputs, fewer multiply-adds), else dense."""
        if state.choice is None:
            return self.feat(state)
        return OneHotInput(state.deter, state.stoch, state.choice)

    def dist(self, stats: torch.Tensor) -> Latent:
        """The latent distribution of ``stats``; ``dist(stats.detach())`` stops its gradient."""
        if self.config.latent == "categorical":
            return CategoricalLatent.from_flat(stats, self.config.classes, self.config.unimix)
        mean, raw = stats.chunk(2, -1)
        return GaussianLatent(mean, F.softplus(raw) + self.config.min_std)

    def _stoch(
        self, stats: torch.Tensor, sample: bool, gen: Source
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The latent (a sample or the mode) and, for a categorical sample, its classes."""
        dist = self.dist(stats)
        if isinstance(dist, CategoricalLatent):
            if not sample:
                return dist.mode().flatten(-2), None
            onehot, index = sample_onehot_index(dist.probs, gen)
            return onehot.flatten(-2), index
        return (dist.sample(gen) if sample else dist.mode()), None

    def prior_stats(self, deter: torch.Tensor) -> torch.Tensor:
        """Prior parameters ``(..., stats)`` of ``deter (..., D)`` (batched over any dims)."""
        return self.img_stats(self.img_out(deter))

    def initial(self, n: int) -> State:
        """``n`` initial states ``(n, D)``, ``(n, Z)`` (learned, or zeros) with the backbone's
        initial memory."""
        ref = self.img_stats.weight
        memory = self.core.initial_memory(n, ref)
        if self.init_deter is None:
            zeros = ref.new_zeros(n, self.config.deter), ref.new_zeros(n, self.stoch_dim)
            return State(*zeros, None, memory)
        deter = torch.tanh(self.init_deter)[None]
        stoch, _ = self._stoch(self.prior_stats(deter), sample=False, gen=None)
        return State(deter.expand(n, -1), stoch.expand(n, -1), None, memory)

    def reset(
        self, state: State, action: torch.Tensor, is_first: torch.Tensor
    ) -> tuple[State, torch.Tensor]:
        """Where ``is_first (N,)`` is set: the initial state and a zero previous action."""
        init = self.initial(state.deter.shape[0])
        first = is_first.reshape(-1, 1)
        return _where(is_first, init, state), torch.where(first, torch.zeros_like(action), action)

    def _deter_step(self, state: State, action_h: torch.Tensor) -> tuple[torch.Tensor, Memory]:
        if state.choice is None:
            stoch_h = self.img_in_stoch(state.stoch)
        else:
            stoch_h = onehot_matmul(state.stoch, state.choice, self.img_in_stoch.weight)
        x = self.img_in_norm(stoch_h + action_h)
        return self.core.step(x, state.deter, state.memory)

    def _post_stats(self, deter: torch.Tensor, embed_h: torch.Tensor) -> torch.Tensor:
        return self.obs_stats(self.obs_norm(self.obs_deter(deter) + embed_h))

    def _post(
        self, deter: torch.Tensor, memory: Memory, embed_h: torch.Tensor, gen: Source
    ) -> tuple[State, torch.Tensor]:
        stats = self._post_stats(deter, embed_h)
        return State(deter, *self._stoch(stats, True, gen), memory), stats

    def compile_steps(self, mode: str = "default", backend: str = "inductor") -> None:
        """``torch.compile`` the deterministic per-step functions: the GRU step with its input
        layer, and the prior and posterior heads. Sampling stays eager (it draws from the
        caller's generator), so a compiled RSSM samples the same latents as an eager one.
        ``mode``: torch.compile's (``reduce-overhead`` adds CUDA graphs on a GPU); ``backend``:
        torch.compile's (``aot_eager`` runs the same graphs op by op)."""
        inductor_mode = mode if backend == "inductor" else None  # other backends take none
        for name in ("_deter_step", "_post_stats", "prior_stats"):
            step = getattr(self, name)
            compiled = torch.compile(step, dynamic=False, backend=backend, mode=inductor_mode)
            setattr(self, name, compiled)

    def img_step(
        self, state: State, action: torch.Tensor, gen: Source = None
    ) -> tuple[State, torch.Tensor]:
        """One prior step ``(N, ...)``: returns the next state (sampled prior) and prior stats."""
        deter, memory = self._deter_step(state, self.img_in_action(action))
        stats = self.prior_stats(deter)
        return State(deter, *self._stoch(stats, True, gen), memory), stats

    def obs_step(
        self,
        state: State,
        action: torch.Tensor,
        embed: torch.Tensor,
        is_first: torch.Tensor,
        gen: Source = None,
    ) -> tuple[State, torch.Tensor]:
        """One posterior step ``(N, ...)`` (acting): returns the posterior state and its stats.

        Args:
            state: the previous state ``(N, D)``, ``(N, Z)``.
            action: the previous action ``(N, A)``.
            embed: the observation embedding ``(N, E)``.
            is_first: ``(N,)`` bool; resets state and action first.
            gen: random generator of the latent sample.
        """
        state, action = self.reset(state, action, is_first)
        deter, memory = self._deter_step(state, self.img_in_action(action))
        return self._post(deter, memory, self.obs_embed(embed), gen)

    def observe(
        self,
        embed: torch.Tensor,
        action: torch.Tensor,
        is_first: torch.Tensor,
        state: State | None = None,
        gen: Source = None,
    ) -> tuple[State, torch.Tensor, torch.Tensor]:
        """Posterior states of a sequence batch, one GRU step per time step.

        Args:
            embed: ``(B, T, E)`` embeddings.
            action: ``(B, T, A)`` previous actions (``action[:, t]`` was taken before step t).
            is_first: ``(B, T)`` bool; the state and action are reset where set.
            state: state before the first step ``(B, ...)``; None starts from the initial state.
            gen: random generator of the latent samples.

        Returns:
            Posterior states ``(B, T, D)``, ``(B, T, Z)`` (with the backbone's memory after
            every step, ``(B, T, ...)``), posterior stats ``(B, T, K)`` and
            prior stats ``(B, T, K)`` (the prior head runs once, batched, after the loop).
        """
        batch, steps = is_first.shape
        keep = (~is_first).unsqueeze(-1).to(action.dtype)
        action_h = self.img_in_action(action * keep)
        embed_h = self.obs_embed(embed)
        init = self.initial(batch)
        state = init if state is None else state
        posts, post_stats = [], []
        # On the CPU, skip the reset where no sequence (re)starts and select the initial state
        # where all do (t = 0 of a replayed batch): fewer ops per step, same states.
        # (A compiled update takes the general path: its graph cannot depend on the data.)
        eager_cpu = is_first.device.type == "cpu" and not torch.compiler.is_compiling()
        firsts = is_first.sum(0).tolist() if eager_cpu else [-1] * steps
        for t in range(steps):
            if firsts[t] == batch:
                state = init
            elif firsts[t]:
                state = _where(is_first[:, t], init, state)
            deter, memory = self._deter_step(state, action_h[:, t])
            state, stats = self._post(deter, memory, embed_h[:, t], gen)
            posts.append(state)
            post_stats.append(stats)
        seq = stack_states(posts, memory=True)
        return seq, torch.stack(post_stats, 1), self.prior_stats(seq.deter)


def _rename_gru(state_dict: dict, prefix: str, *args: object) -> None:
    """Read checkpoints written before the sequence model became ``core`` (it was ``gru``)."""
    for key in [k for k in state_dict if k.startswith(prefix + "gru.")]:
        state_dict[prefix + "core." + key[len(prefix) + 4 :]] = state_dict.pop(key)
