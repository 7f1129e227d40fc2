"""What compiling the Dreamer update costs and gains on this machine, from a cold compile cache.

    python benchmarks/compile_bench.py [--size default] [--repeats 6]

Three agents of one size train on the learner bench's batch, in one process whose torch compile
cache is a new, empty folder (what a fresh clone's first ``run.compile=true`` run meets):

- ``eager``: the reference update;
- ``whole``: ``run.compile=true``, the whole update as two graphs (world model; imagination and
  actor-critic losses), each with its backward pass;
- ``regional``: the alternative of compiling per-step regions instead: the RSSM's GRU step and
  prior and posterior heads (``RSSM.compile_steps``, what acting uses) and every MLP and the
  encoder and decoder as compiled modules, with the loops, sampling and losses left eager.

For each compiled variant: its warm-up (the first update, which compiles), torch's own split of
that time (tracing, inductor's scheduling and code generation, the C++ compiler, from
``torch._dynamo.utils.compile_times``) and the number of kernels inductor generated; then the
three agents' updates timed in rotation (eager, whole, regional, eager, ...) so a change of the
machine's load hits all alike, each variant's speed-up against the eager times of the same
rotation, and the updates after which the warm-up is paid back. Written:
``compile_bench.json`` in the machine's results folder.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PHASES = {
    "trace_s": ("bytecode_tracing", "aot_trace_joint_graph"),
    "inductor_codegen_s": ("GraphLowering.codegen",),
    "cpp_compile_s": ("async_compile.wait",),
}
"""Parts of torch's compile-time record (``compile_times``) summed into each reported phase."""


def compile_phases() -> dict[str, float]:
    """Seconds so far in each of :data:`PHASES`, from torch's compile-time record."""
    from torch._dynamo.utils import compile_times

    names, values = compile_times(repr="csv", aggregate=True)
    seconds = dict(zip(names, (float(v) for v in values), strict=True))
    return {key: sum(seconds.get(n, 0.0) for n in parts) for key, parts in PHASES.items()}


def compile_regions(agent: Any, backend: str = "inductor") -> None:
    """The ``regional`` variant: per-step RSSM functions and every network module compiled
    (``backend``: torch.compile's; the test uses ``aot_eager``, the same regions run op by op)."""
    agent.wm.rssm.compile_steps(backend=backend)
    modules = [agent.actor.net, agent.critic, agent.slow_critic, agent.wm.reward, agent.wm.cont]
    modules += [agent.wm.encoder, agent.wm.decoder]
    for module in modules:
        module.compile(dynamic=False, backend=backend)


def bench(size: str, repeats: int) -> dict[str, Any]:
    import numpy as np
    import torch._inductor.metrics as inductor_metrics

    from benchmarks.common import median
    from benchmarks.learner_bench import alternate, dreamer_config, fake_batch, spaces
    from wm_ray.factory import create_model

    obs_space, act_space = spaces("vector")
    agents: dict[str, Any] = {}
    row: dict[str, Any] = {"size": size, "variants": {}}
    for variant in ("eager", "whole", "regional"):
        config = dreamer_config(size, "cpu", [f"run.compile={variant == 'whole'}"])
        agent = create_model("dreamer", obs_space, act_space, config)
        if variant == "regional":
            compile_regions(agent)
        agents[variant] = agent
        b, t = config.replay.batch_size, config.replay.seq_len
        batch = fake_batch("vector", np.random.default_rng(0), b, t)
        before, kernels = compile_phases(), inductor_metrics.generated_kernel_count
        start = time.perf_counter()
        agent.train(batch, None)  # compiles (eager: the first update, for comparison)
        first = time.perf_counter() - start
        after = compile_phases()
        row["variants"][variant] = {
            "first_update_s": first,
            **{k: after[k] - before[k] for k in PHASES},
            "kernels_generated": inductor_metrics.generated_kernel_count - kernels,
        }
        print(f"[{variant}] first update {first:.1f} s", flush=True)
    row["batch"] = [b, t]
    times = dict(zip(agents, alternate(list(agents.values()), batch, repeats), strict=True))
    eager = median(times["eager"])
    for variant, record in row["variants"].items():
        update = median(times[variant])
        record.update(update_s=update, speedup=eager / update)
        saved = eager - update  # per update, against eager
        record["payback_updates"] = (
            (record["first_update_s"] - eager) / saved if variant != "eager" and saved > 0 else None
        )
    return row


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    from benchmarks.learner_bench import SIZES

    p.add_argument("--size", default="default", choices=SIZES,
                   help="learner bench size (default: make run's configuration)")  # fmt: skip
    p.add_argument("--repeats", type=int, default=6, help="rotations timed (each all 3 agents)")
    p.add_argument("--out", type=Path, default=None, help="JSON path (default: results folder)")
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="wm_ray-cold-compile-") as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache  # read when torch first compiles
        from benchmarks.common import write_result

        row = bench(args.size, args.repeats)
        row["cache"] = "cold: a new, empty TORCHINDUCTOR_CACHE_DIR"
        path = write_result("compile_bench", row, args.out)
    for variant, r in row["variants"].items():
        print(
            f"{variant:9s} first update {r['first_update_s']:6.1f} s, update "
            f"{r['update_s'] * 1e3:5.0f} ms, x{r['speedup']:.2f} vs eager, "
            f"{r['kernels_generated']} kernels, payback after {r['payback_updates']} updates"
        )
    print(f"written: {path}")


if __name__ == "__main__":
    main()
