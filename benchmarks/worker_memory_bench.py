"""Memory of an env worker's agent: the whole learner (before) vs the acting-only agent (after).

Usage::

    python benchmarks/worker_memory_bench.py [--cases default dreamer_s_pong iris_pong]

An env worker used to build the whole agent, optimizers and training-only networks included,
only to act; it now builds ``create_model(..., acting=True)``. Each case runs three fresh
processes that build what an env worker builds (one vector env of ``env.num_envs`` envs, then
nothing / the full agent / the acting-only agent, each acting for 20 vector steps) and read
their resident memory (``VmRSS``) and the agent's tensor bytes (parameters, buffers, optimizer
state). The env-only process is the baseline measured in the same run, so the agent's share is
``RSS - baseline``. Results: ``worker_memory.json`` in the machine's folder.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_result

CASES: dict[str, tuple[list[str], list[str]]] = {
    "default": ([], []),
    "dreamer_s_pong": (["atari", "dreamer", "size_s"], []),
    "iris_pong": (["atari", "iris"], ["run.device=cpu"]),
}
"""Case -> (presets, overrides): ``make run``'s Dreamer on CartPole, DreamerV3's size S on ALE
Pong, IRIS at the paper's size on ALE Pong."""

_CHILD = """
import json, sys, torch
torch.set_num_threads(1)
from wm_ray.config_io import build_config
from wm_ray.factory import create_model
from wm_ray.loops.driver import Driver
from wm_ray.loops.setup import make_vector_env
presets, overrides, mode = json.loads(sys.argv[1])
config = build_config(presets, ["run.device=cpu", *overrides])
venv = make_vector_env(config.env, seed=0)
tensor_bytes = 0
if mode != "env":
    agent = create_model(config.run.model, venv.obs_space, venv.act_space, config,
                         acting=mode == "acting")
    Driver(venv, agent).run(steps=20 * venv.num_envs)
    seen = set()
    for module in agent.nets.modules():
        for t in [*module.parameters(recurse=False), *module.buffers(recurse=False)]:
            if id(t) not in seen:
                seen.add(id(t)); tensor_bytes += t.numel() * t.element_size()
    for opt in agent.optimizers().values():
        for state in opt.state_dict()["optimizer"]["state"].values():
            tensor_bytes += sum(v.numel() * v.element_size() for v in state.values()
                                if torch.is_tensor(v))
else:
    venv.reset()
status = open("/proc/self/status").read()
rss = next(int(l.split()[1]) * 1024 for l in status.splitlines() if l.startswith("VmRSS"))
print(json.dumps({"rss": rss, "tensor_bytes": tensor_bytes,
                  "model": config.run.model, "env": config.env.id}))
venv.close()
"""


def measure(presets: list[str], overrides: list[str], mode: str) -> dict[str, Any]:
    """One fresh process building what an env worker builds in ``mode`` (env/full/acting)."""
    argv = [sys.executable, "-c", _CHILD, json.dumps([presets, overrides, mode])]
    out = subprocess.run(argv, check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = parser.parse_args()
    rows = []
    for name in args.cases:
        presets, overrides = CASES[name]
        env, full, acting = (measure(presets, overrides, m) for m in ("env", "full", "acting"))
        mib = 2.0**20
        row = {
            "case": name,
            "presets": presets,
            "model": full["model"],
            "env": full["env"],
            "baseline_env_only_rss_mib": env["rss"] / mib,
            "full_agent_rss_mib": full["rss"] / mib,
            "acting_agent_rss_mib": acting["rss"] / mib,
            "full_agent_share_mib": (full["rss"] - env["rss"]) / mib,
            "acting_agent_share_mib": (acting["rss"] - env["rss"]) / mib,
            "full_tensor_mib": full["tensor_bytes"] / mib,
            "acting_tensor_mib": acting["tensor_bytes"] / mib,
        }
        rows.append(row)
        print(
            f"{name:16s} {row['model']:8s} {row['env']:14s} env only {env['rss'] / mib:7.1f} MiB"
            f" | full agent +{row['full_agent_share_mib']:6.1f} MiB"
            f" ({row['full_tensor_mib']:6.1f} MiB tensors)"
            f" | acting-only +{row['acting_agent_share_mib']:6.1f} MiB"
            f" ({row['acting_tensor_mib']:6.1f} MiB tensors)",
            flush=True,
        )
    path = write_result("worker_memory", {"results": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
