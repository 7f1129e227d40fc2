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
optimizer state. The samplers cannot call the agent's generator inside a graph: the numbers
each part of an update needs are drawn first from that generator, as two flat tensors
(uniform and normal) laid out in the order the samplers take them
(:class:`~wm_ray.models.common.noise.Tape`, :func:`world_model_tape`,
:func:`imagination_tape`), and enter the graph as two inputs. The eager update draws its
numbers the same way, so a compiled update samples exactly the latents and actions the eager
one samples from the same generator state (the equivalence tests rely on it), and every replay
of a captured graph gets fresh numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from wm_ray.models.common.noise import Kind, Plan, Tape
from wm_ray.models.common.optim import step_together

if TYPE_CHECKING:
    from wm_ray.models.common.data import SeqBatch
    from wm_ray.models.dreamer.agent import DreamerAgent
    from wm_ray.models.dreamer.networks import State

from wm_ray.models.dreamer.losses import actor_critic_losses, imagine, world_model_loss

Metrics = dict[str, torch.Tensor]


def _latent_draw(agent: DreamerAgent, n: int) -> tuple[Kind, tuple[int, ...]]:
    rssm = agent.cfg.rssm
    if rssm.latent == "categorical":
        return ("rand", (n, rssm.stoch, 1))
    return ("randn", (n, rssm.stoch))


def world_model_plan(agent: DreamerAgent, batch: int, steps: int) -> Plan:
    """The world-model loss's draws: one posterior sample per step."""
    return [_latent_draw(agent, batch)] * steps


def imagination_plan(agent: DreamerAgent, starts: int) -> Plan:
    """Imagination's draws: per step an action, then a prior sample."""
    act = agent.act
    action: tuple[Kind, tuple[int, ...]] = (
        ("rand", (starts, 1)) if act.discrete else ("randn", (starts, act.dim))
    )
    return [action, _latent_draw(agent, starts)] * agent.cfg.ac.horizon


def world_model_tape(agent: DreamerAgent, batch: int, steps: int) -> Tape:
    """The random numbers of one world-model loss, drawn from the agent's generator."""
    return Tape.draw(world_model_plan(agent, batch, steps), agent.gen, agent.device)


def imagination_tape(agent: DreamerAgent, starts: int) -> Tape:
    """The random numbers of one imagination from ``starts`` states."""
    return Tape.draw(imagination_plan(agent, starts), agent.gen, agent.device)


def check_used_up(tape: Tape, what: str) -> None:
    """Every planned draw was taken (else the plan no longer matches the samplers)."""
    if not tape.used_up:
        raise RuntimeError(f"the {what} took {tape.taken} of its {len(tape.plan)} planned draws")


def world_model_part(
    agent: DreamerAgent, data: SeqBatch, tape: Tape
) -> tuple[torch.Tensor, Metrics, State]:
    """The world-model loss, its metrics and the detached posteriors ``(B * T, ...)`` that
    start imagination (eager, or traced into the first graph)."""
    with agent._autocast():
        loss, metrics, posts = world_model_loss(agent.wm, data, agent.cfg.loss, tape)
    check_used_up(tape, "world-model loss")
    return loss, metrics, posts.map(lambda x: x.detach().flatten(0, 1))


def actor_critic_part(
    agent: DreamerAgent, start: State, start_cont: torch.Tensor, tape: Tape
) -> tuple[torch.Tensor, torch.Tensor, Metrics]:
    """Imagination from ``start`` and the actor and critic losses (eager, or traced into the
    second graph)."""
    with agent._autocast():
        with torch.set_grad_enabled(agent.dynamics):
            traj = imagine(agent.wm, agent.actor, start, start_cont, agent.cfg.ac, tape)
        check_used_up(tape, "imagination")
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
        # The graphs take shapes (and the tapes' plans) as constants; a new batch shape
        # compiles once more.
        options: dict[str, Any] = {"dynamic": False, "backend": backend}
        if backend == "inductor":
            options["mode"] = mode
        self._world_model = torch.compile(self._world_model_graph, **options)
        self._actor_critic = torch.compile(self._actor_critic_graph, **options)

    # ----------------------------------------------------------------------------- graphs

    def _world_model_graph(
        self, data: SeqBatch, uniform: torch.Tensor, normal: torch.Tensor, plan: Plan
    ) -> tuple[torch.Tensor, Metrics, State]:
        return world_model_part(self.agent, data, Tape(uniform, normal, plan))

    def _actor_critic_graph(
        self,
        start: State,
        start_cont: torch.Tensor,
        uniform: torch.Tensor,
        normal: torch.Tensor,
        plan: Plan,
    ) -> tuple[torch.Tensor, torch.Tensor, Metrics]:
        return actor_critic_part(self.agent, start, start_cont, Tape(uniform, normal, plan))

    # ----------------------------------------------------------------------------- update

    def world_model(self, data: SeqBatch) -> tuple[torch.Tensor, Metrics, State]:
        """The world-model loss, its metrics and the detached posterior starts ``(B * T, ...)``."""
        batch, steps = data.is_first.shape
        tape = world_model_tape(self.agent, batch, steps)
        if self.capture:
            torch.compiler.cudagraph_mark_step_begin()
        return self._world_model(data, tape.flat["rand"], tape.flat["randn"], tape.plan)

    def actor_critic(
        self, start: State, start_cont: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, Metrics]:
        """The actor and critic losses (with their graph) and metrics of one imagination."""
        tape = imagination_tape(self.agent, start.deter.shape[0])
        flat = tape.flat
        return self._actor_critic(start, start_cont, flat["rand"], flat["randn"], tape.plan)

    def step_actor_critic(
        self, actor_loss: torch.Tensor, critic_loss: torch.Tensor
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Step the actor and the critic from the one graph both losses came out of, with one
        backward pass (a captured graph's backward must run once per replay). Exact: the
        actor loss reads the critic through detached weights (``losses.frozen``) and the
        critic loss reads detached states, so each network gets its own loss's gradient."""
        agent = self.agent
        actor_stats, critic_stats = step_together(
            [agent.actor_opt, agent.critic_opt], [actor_loss, critic_loss]
        )
        return actor_stats, critic_stats
