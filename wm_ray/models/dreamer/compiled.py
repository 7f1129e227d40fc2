"""The whole Dreamer update compiled (``run.compile=true``) and, on a GPU, captured as CUDA graphs
(``run.compile_mode=reduce-overhead``).

The eager update (``DreamerAgent.train``) is the reference. This one runs the same math as two
large graphs instead of ~30,000 small operator calls:

1. the world-model loss: encoder, the observe loop over all ``T`` steps (unrolled), decoder,
   heads and KL, with its backward pass;
2. imagination over the ``H``-step horizon (unrolled), lambda-returns, the return normalizer
   and the actor and critic losses, with their backward passes.

The optimizer steps and the slow-critic update run between and after the graphs (fused
AdamW, a foreach norm and a foreach lerp: a few kernels each), so a captured graph never holds
optimizer state. The samplers cannot call the agent's generator inside a graph: every random
number an update needs is drawn first, eagerly, from that generator, in the order and shapes
the eager update draws them (:class:`~wm_ray.models.common.noise.Tape`), and enters the graph
as an input. So a compiled update samples exactly the latents and actions the eager one
samples from the same generator state (the equivalence test relies on it), and every replay
of a captured graph gets fresh numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from wm_ray.models.common.noise import Plan, Tape
from wm_ray.models.common.optim import step_together

if TYPE_CHECKING:
    from wm_ray.models.common.data import SeqBatch
    from wm_ray.models.dreamer.agent import DreamerAgent
    from wm_ray.models.dreamer.networks import State

from wm_ray.models.dreamer.losses import actor_critic_losses, imagine, world_model_loss

Metrics = dict[str, torch.Tensor]


class CompiledUpdate:
    """The compiled update of one :class:`DreamerAgent` (see the module docstring).

    Args:
        agent: the learner agent (its networks, optimizers, generator and config).
        mode: ``torch.compile``'s mode (``reduce-overhead`` adds CUDA graphs on a GPU).
        backend: ``torch.compile``'s backend (tests use ``aot_eager``: the same graphs, run
            op by op).
    """

    def __init__(
        self, agent: DreamerAgent, mode: str = "default", backend: str = "inductor"
    ) -> None:
        self.agent = agent
        self.capture = mode == "reduce-overhead" and agent.device.type == "cuda"
        # The graphs take shapes as constants; a new batch shape compiles once more.
        options: dict[str, Any] = {"dynamic": False, "backend": backend}
        if backend == "inductor":
            options["mode"] = mode
        self._world_model = torch.compile(self._world_model_graph, **options)
        self._actor_critic = torch.compile(self._actor_critic_graph, **options)

    # ----------------------------------------------------------------------------- plans

    def _latent_draw(self, n: int) -> tuple[str, tuple[int, ...]]:
        rssm = self.agent.cfg.rssm
        if rssm.latent == "categorical":
            return ("rand", (n, rssm.stoch, 1))
        return ("randn", (n, rssm.stoch))

    def world_model_plan(self, batch: int, steps: int) -> Plan:
        """The eager world-model loss's draws: one posterior sample per step."""
        return [self._latent_draw(batch)] * steps  # type: ignore[list-item]

    def actor_critic_plan(self, starts: int) -> Plan:
        """The eager imagination's draws: per step an action, then a prior sample."""
        act = self.agent.act
        action = ("rand", (starts, 1)) if act.discrete else ("randn", (starts, act.dim))
        return [action, self._latent_draw(starts)] * self.agent.cfg.ac.horizon  # type: ignore[list-item]

    # ----------------------------------------------------------------------------- graphs

    def _world_model_graph(
        self, data: SeqBatch, draws: list[torch.Tensor], kinds: tuple[str, ...]
    ) -> tuple[torch.Tensor, Metrics, State]:
        agent = self.agent
        tape = Tape(draws, kinds)  # type: ignore[arg-type]
        with agent._autocast():
            loss, metrics, posts = world_model_loss(agent.wm, data, agent.cfg.loss, tape)
        start = posts.map(lambda x: x.detach().flatten(0, 1))
        return loss, metrics, start

    def _actor_critic_graph(
        self,
        start: State,
        start_cont: torch.Tensor,
        draws: list[torch.Tensor],
        kinds: tuple[str, ...],
    ) -> tuple[torch.Tensor, torch.Tensor, Metrics]:
        agent = self.agent
        tape = Tape(draws, kinds)  # type: ignore[arg-type]
        with agent._autocast():
            with torch.set_grad_enabled(agent.dynamics):
                traj = imagine(agent.wm, agent.actor, start, start_cont, agent.cfg.ac, tape)
            actor_loss, critic_loss, _, metrics = actor_critic_losses(
                traj,
                agent.actor,
                agent.critic,
                agent.slow_critic,
                agent.retnorm,
                agent.cfg.ac,
                agent.dynamics,
            )
        return actor_loss, critic_loss, metrics

    # ----------------------------------------------------------------------------- update

    def world_model(self, data: SeqBatch) -> tuple[torch.Tensor, Metrics, State]:
        """The world-model loss, its metrics and the detached posterior starts ``(B * T, ...)``."""
        batch, steps = data.is_first.shape
        tape = Tape.draw(self.world_model_plan(batch, steps), self.agent.gen, self.agent.device)
        if self.capture:
            torch.compiler.cudagraph_mark_step_begin()
        return self._world_model(data, tape.draws, tuple(tape.kinds))

    def actor_critic(
        self, start: State, start_cont: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, Metrics]:
        """The actor and critic losses (with their graph) and metrics of one imagination."""
        plan = self.actor_critic_plan(start.deter.shape[0])
        tape = Tape.draw(plan, self.agent.gen, self.agent.device)
        return self._actor_critic(start, start_cont, tape.draws, tuple(tape.kinds))

    def step_actor_critic(
        self, actor_loss: torch.Tensor, critic_loss: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Step the actor and the critic from the one graph both losses came out of."""
        agent = self.agent
        if agent.dynamics and not agent.cfg.ac.slow_critic_target:
            # The actor's returns bootstrap from the critic itself: the actor loss reaches
            # the critic's parameters, so the two gradients are taken one after the other
            # (both before either step changes a parameter the graph saved).
            agent.actor_opt.backward(actor_loss, retain_graph=True)
            agent.critic_opt.backward(critic_loss)
            return agent.actor_opt.apply(actor_loss), agent.critic_opt.apply(critic_loss)
        actor_stats, critic_stats = step_together(
            [agent.actor_opt, agent.critic_opt], [actor_loss, critic_loss]
        )
        return actor_stats, critic_stats
