"""A fake "Unity build" for the tests of the ``unity`` env backend (no Unity build can exist in CI).

It speaks ML-Agents' communicator protocol exactly as a built Unity player does: the Python side
(``mlagents_envs``' RpcCommunicator) is the gRPC server on ``--mlagents-port``; this process is the
client and calls ``UnityToExternalProto.Exchange`` with ``UnityMessageProto`` messages, built with
the protocol's own generated classes (``mlagents_envs.communicator_objects``):

1. initialization: it sends the academy's ``rl_initialization_output`` (communication version,
   capabilities) and receives ``rl_initialization_input`` (the seed); then it sends an empty
   message, whose reply carries the first command;
2. then, for every reply: RESET or STEP (with the agents' actions) -> it sends the agents'
   ``AgentInfoProto`` (observations, reward, done, max_step_reached); the behaviour's
   ``BrainParametersProto`` travel with the first output after initialization, as in Unity.
   A reply with header status 400 (Python closed), the QUIT command or a broken connection end
   the process.

The game is tiny and deterministic. Each agent has a position ``x``, drawn uniformly in [-1, 1]
from ``numpy.random.default_rng(seed)`` at every episode start. An action moves it by
``0.1 * m``; the reward is ``m`` where ``m`` is: continuous ``a[0]`` (2 actions, in [-1, 1]);
discrete ``a - 1`` (one branch of 3); multidiscrete ``(b0 - 1) * (1 + b1)`` (branches 3 and 2);
hybrid (1 continuous + a branch of 2) exists to be refused. Episodes last ``--episode-length``
steps and end as a termination, or as an interruption (``max_step_reached``) with
``--interrupted``; as in Unity, the agent restarts by itself and its new episode's first decision
is sent in the same output as the terminal step. Observations, in this order:

- ``state`` (3,): [x, step in episode, m of the last action];
- ``info`` (3,): [episode index, seed, time scale received on the engine side channel];
- with ``--visuals 1`` or ``2``: ``camera`` (12, 16, 3) as a PNG, uniform colour
  (10 * step % 256, seed % 256, 10 * episode % 256);
- with ``--visuals 2``: ``depth`` (12, 16, 1) as raw floats, uniform ``step / episode_length``.

``--agents N`` puts N agents in the behaviour, ``--behaviors 2`` adds a second behaviour
(``Other``), ``--hang-at K`` makes the process stop answering (alive) at its K-th step. With
``FAKE_UNITY_RECORD`` set, it appends one JSON line (pid, argv, port, seed) to that file after
the initialization.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import sys
import time
import uuid

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # as quiet as a player, before grpc loads

import grpc
import numpy as np
from mlagents_envs.communicator_objects.agent_info_pb2 import AgentInfoProto
from mlagents_envs.communicator_objects.brain_parameters_pb2 import (
    ActionSpecProto,
    BrainParametersProto,
)
from mlagents_envs.communicator_objects.capabilities_pb2 import UnityRLCapabilitiesProto
from mlagents_envs.communicator_objects.command_pb2 import QUIT, RESET
from mlagents_envs.communicator_objects.header_pb2 import HeaderProto
from mlagents_envs.communicator_objects.observation_pb2 import PNG, ObservationProto
from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto
from mlagents_envs.communicator_objects.unity_output_pb2 import UnityOutputProto
from mlagents_envs.communicator_objects.unity_rl_initialization_output_pb2 import (
    UnityRLInitializationOutputProto,
)
from mlagents_envs.communicator_objects.unity_rl_output_pb2 import UnityRLOutputProto
from mlagents_envs.communicator_objects.unity_to_external_pb2_grpc import UnityToExternalProtoStub
from PIL import Image

BEHAVIOR = "Mover?team=0"
OTHER = "Other?team=0"
ENGINE_CHANNEL = uuid.UUID("e951342c-4f7e-11ea-b238-784f4387d1f7")
TIME_SCALE = 2  # EngineConfigurationChannel.ConfigurationType.TIME_SCALE
HEIGHT, WIDTH = 12, 16
ACTIONS = {"continuous": (2, ()), "discrete": (0, (3,)), "multidiscrete": (0, (3, 2))}
ACTIONS["hybrid"] = (1, (2,))


class Game:
    """The agents of the fake scene and their episodes."""

    def __init__(self, args: argparse.Namespace, seed: int) -> None:
        self.args = args
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.time_scale = 1.0
        self.x = np.zeros(args.agents)
        self.t = 0
        self.episode = -1
        self.moved = np.zeros(args.agents)

    def reset(self) -> None:
        self.x = self.rng.uniform(-1.0, 1.0, self.args.agents)
        self.t = 0
        self.episode += 1
        self.moved[:] = 0.0

    def move(self, action: object) -> float:
        kind = self.args.actions
        cont = np.asarray(action.continuous_actions, np.float64)  # type: ignore[attr-defined]
        disc = np.asarray(action.discrete_actions, np.int64)  # type: ignore[attr-defined]
        if kind == "continuous":
            return float(np.clip(cont[0], -1.0, 1.0))
        if kind == "discrete":
            return float(disc[0] - 1)
        if kind == "multidiscrete":
            return float((disc[0] - 1) * (1 + disc[1]))
        return float(cont[0] + disc[0])

    def observations(self, agent: int) -> list[ObservationProto]:
        def floats(name: str, values: list[float], shape: tuple[int, ...]) -> ObservationProto:
            obs = ObservationProto(shape=list(shape), name=name)
            obs.float_data.data.extend(values)
            return obs

        length = self.args.episode_length
        out = [
            floats("state", [self.x[agent], self.t, self.moved[agent]], (3,)),
            floats("info", [self.episode, self.seed, self.time_scale], (3,)),
        ]
        if self.args.visuals >= 1:
            colour = np.array([10 * self.t % 256, self.seed % 256, 10 * self.episode % 256])
            frame = np.broadcast_to(colour.astype(np.uint8), (HEIGHT, WIDTH, 3))
            png = io.BytesIO()
            Image.fromarray(np.ascontiguousarray(frame)).save(png, format="PNG")
            camera = ObservationProto(shape=[HEIGHT, WIDTH, 3], name="camera")
            camera.compression_type = PNG
            camera.compressed_data = png.getvalue()
            out.append(camera)
        if self.args.visuals >= 2:
            out.append(floats("depth", [self.t / length] * (HEIGHT * WIDTH), (HEIGHT, WIDTH, 1)))
        return out

    def infos(self, rewards: np.ndarray, done: bool) -> list[AgentInfoProto]:
        return [
            AgentInfoProto(
                id=agent,
                reward=float(rewards[agent]),
                done=done,
                max_step_reached=done and self.args.interrupted,
                observations=self.observations(agent),
            )
            for agent in range(self.args.agents)
        ]

    def step(self, actions: list[object]) -> list[AgentInfoProto]:
        rewards = np.array([self.move(action) for action in actions] or [0.0] * self.args.agents)
        self.moved = rewards
        self.x = self.x + 0.1 * rewards
        self.t += 1
        if self.t < self.args.episode_length:
            return self.infos(rewards, done=False)
        terminal = self.infos(rewards, done=True)
        self.reset()  # Unity restarts the agent at once; its next decision comes along
        return terminal + self.infos(np.zeros(self.args.agents), done=False)

    def read_side_channel(self, data: bytes) -> None:
        """Take the time scale from EngineConfigurationChannel messages; ignore the others."""
        offset = 0
        while offset < len(data):
            channel = uuid.UUID(bytes_le=data[offset : offset + 16])
            (size,) = struct.unpack_from("<i", data, offset + 16)
            body = data[offset + 20 : offset + 20 + size]
            offset += 20 + size
            if channel == ENGINE_CHANNEL and struct.unpack_from("<i", body)[0] == TIME_SCALE:
                self.time_scale = struct.unpack_from("<f", body, 4)[0]


def brain(name: str, kind: str) -> BrainParametersProto:
    continuous, branches = ACTIONS[kind]
    spec = ActionSpecProto(
        num_continuous_actions=continuous,
        num_discrete_actions=len(branches),
        discrete_branch_sizes=list(branches),
    )
    return BrainParametersProto(brain_name=name, is_training=True, action_spec=spec)


def output(game: Game, infos: list[AgentInfoProto], first: bool) -> UnityMessageProto:
    rl_output = UnityRLOutputProto()
    rl_output.agentInfos[BEHAVIOR].value.extend(infos)
    behaviors = [BEHAVIOR]
    if game.args.behaviors > 1:
        rl_output.agentInfos[OTHER].value.extend(game.infos(np.zeros(game.args.agents), False))
        behaviors.append(OTHER)
    message = UnityMessageProto(header=HeaderProto(status=200))
    message.unity_output.rl_output.CopyFrom(rl_output)
    if first:  # Unity sends a behaviour's parameters with its first agent infos
        init = message.unity_output.rl_initialization_output
        init.brain_parameters.extend([brain(name, game.args.actions) for name in behaviors])
    return message


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mlagents-port", type=int, required=True)
    parser.add_argument("--actions", choices=sorted(ACTIONS), default="continuous")
    parser.add_argument("--visuals", type=int, choices=(0, 1, 2), default=1)
    parser.add_argument("--agents", type=int, default=1)
    parser.add_argument("--behaviors", type=int, choices=(1, 2), default=1)
    parser.add_argument("--episode-length", type=int, default=5)
    parser.add_argument("--interrupted", action="store_true")
    parser.add_argument("--hang-at", type=int, default=0, help="stop answering at this step")
    args, _unity_args = parser.parse_known_args()  # -nographics, -batchmode, -logFile, ...

    channel = grpc.insecure_channel(f"localhost:{args.mlagents_port}")
    stub = UnityToExternalProtoStub(channel)
    capabilities = UnityRLCapabilitiesProto(
        baseRLCapabilities=True, concatenatedPngObservations=True, compressedChannelMapping=True
    )
    academy = UnityRLInitializationOutputProto(
        name="FakeAcademy",
        communication_version="1.5.0",
        package_version="2.0.0",
        capabilities=capabilities,
    )
    hello = UnityMessageProto(header=HeaderProto(status=200))
    hello.unity_output.CopyFrom(UnityOutputProto(rl_initialization_output=academy))
    try:
        reply = stub.Exchange(hello, wait_for_ready=True, timeout=60)
        seed = reply.unity_input.rl_initialization_input.seed
        game = Game(args, seed)
        record = os.environ.get("FAKE_UNITY_RECORD")
        if record:
            line = {"pid": os.getpid(), "argv": sys.argv[1:], "port": args.mlagents_port}
            with open(record, "a") as f:
                f.write(json.dumps({**line, "seed": seed}) + "\n")
        reply = stub.Exchange(UnityMessageProto(header=HeaderProto(status=200)))
        first, steps = True, 0
        while reply.header.status == 200:
            rl_input = reply.unity_input.rl_input
            game.read_side_channel(rl_input.side_channel)
            if rl_input.command == QUIT:
                break
            if rl_input.command == RESET:
                game.reset()
                infos = game.infos(np.zeros(args.agents), done=False)
            else:
                steps += 1
                if steps == args.hang_at:
                    time.sleep(3600)  # a hung player: alive, silent
                infos = game.step(list(rl_input.agent_actions[BEHAVIOR].value))
            reply = stub.Exchange(output(game, infos, first))
            first = False
    except grpc.RpcError:
        return 1  # Python went away: a Unity player quits too
    return 0


if __name__ == "__main__":
    sys.exit(main())
