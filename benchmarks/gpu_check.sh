#!/usr/bin/env bash
# The GPU checks of the learner, in one go, most important first:
#   1. the CUDA tests: CUDA vs CPU updates with device-independent draws (eager, compiled,
#      captured as CUDA graphs, bf16), captured vs eager over many replays, checkpoint/resume,
#      IRIS's captured imagination frame vs eager
#   2. the learner bench at the three JAX-matched sizes, image observations, B16 x T64, bf16
#      (the issue's goal): eager and captured (kernels, launches, GPU busy share)
#   3. IRIS at its paper preset (B64 x T20): the update with eager and captured imagination,
#      and the imagination alone (tokens/s of each mode vs full recomputation); DIAMOND at its
#      paper preset: imagination frames/s (B32 x 15 steps x 3 denoiser calls, eager vs
#      compiled) and the update (B32 x T19); Genie's MaskGIT generation tokens/s (small and
#      the ~115M `genie` preset) against its model-call floor, and the update; the learner rows
#      of the other families' presets (DIAMOND, Genie, JEPA ViT-S)
#   4. the 12M size in fp32 and bf16 with the compiled (not captured) update, for the table
#   5. the update profile at the 12M JAX-matched size
# Every step writes its results before the next starts (the learner bench merges its rows), so
# a run cut short keeps what it measured. Aimed at ~8 minutes on one H100/H200, the compilation
# included (not yet run on a GPU: the first run tells; on 2026-12-07 every step's script ran on a
# CPU under the GPU machine's torch build, 2.11.0+cu130, without Ray, at CPU-scale arguments,
# and tests/unit/test_dreamer_compiled.py and test_iris_world_model.py passed there, CUDA
# tests skipped). Results go to
# benchmarks/results/cuda-<gpu>/ (and $OUT, when set, for the device tool), where
# `python -m benchmarks.summary` picks them up for the README's expected-speed table.
#
#   bash benchmarks/gpu_check.sh            # on a machine with a CUDA GPU
#   bash benchmarks/gpu_check.sh --dry-run  # print the steps, check them, run nothing
#
# Needs torch with CUDA, numpy, gymnasium (1.2.2), PyYAML and pytest; Ray is not needed (the
# learner is imported without it).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

STEPS=(
  "-m pytest -q -p no:cacheprovider tests/unit/test_dreamer_compiled.py tests/unit/test_iris_world_model.py -k 'cuda or captured' -x"
  "benchmarks/learner_bench.py --families dreamer --sizes jax1m jax12m jax50m --obs image --modes eager captured --precision bf16 --repeats 5 --merge"
  "benchmarks/learner_bench.py --families iris --iris-sizes paper --modes eager captured --repeats 3 --merge"
  "benchmarks/iris_bench.py --sizes paper --batch 64 --horizon 20 --modes eager captured --repeats 3"
  "benchmarks/diamond_bench.py --sizes paper --batch 32 --horizon 15 --modes eager compiled --repeats 3"
  "benchmarks/genie_bench.py --sizes small paper --batch 8 --frames 4 --repeats 3"
  "benchmarks/learner_bench.py --families presets --preset-rows diamond-debug genie-small jepa-small jepa --repeats 3 --merge"
  "benchmarks/learner_bench.py --families dreamer --sizes jax12m --obs image --modes compiled captured --precision fp32 bf16 --repeats 5 --merge"
  "benchmarks/profile_update.py --sizes jax12m --obs image --repeats 3"
)

# What every step imports, checked first: a device's minutes are not spent on a missing wheel.
$PY - <<'EOF'
import importlib.util, sys
need = {"torch": "torch", "numpy": "numpy", "gymnasium": "gymnasium (1.2.2)", "yaml": "PyYAML",
        "pytest": "pytest"}
missing = [name for module, name in need.items() if importlib.util.find_spec(module) is None]
if missing:
    sys.exit(f"gpu_check: {sys.executable} lacks {', '.join(missing)}: install them, or set "
             "PYTHON to a Python that has them")
EOF

if [[ "${1:-}" == "--dry-run" ]]; then
  for step in "${STEPS[@]}"; do echo "$PY $step"; done
  # every step's script exists and its arguments parse
  $PY - "${STEPS[@]}" <<'EOF'
import shlex, sys
sys.path.insert(0, ".")
from pathlib import Path
from benchmarks import diamond_bench, genie_bench, iris_bench, learner_bench, profile_update
for step in sys.argv[1:]:
    argv = shlex.split(step)
    if argv[0] == "-m":
        files = [a for a in argv if a.startswith("tests/")]
    else:
        files, parse = [argv[0]], {"benchmarks/learner_bench.py": learner_bench.parser,
                                   "benchmarks/iris_bench.py": iris_bench.parser,
                                   "benchmarks/diamond_bench.py": diamond_bench.parser,
                                   "benchmarks/genie_bench.py": genie_bench.parser,
                                   "benchmarks/profile_update.py": profile_update.parser}[argv[0]]
        parse().parse_args(argv[1:])
    missing = [f for f in files if not Path(f).is_file()]
    if missing:
        sys.exit(f"gpu_check: {missing} not found")
print("gpu_check: dry run ok: every step's file exists and its arguments parse")
EOF
  exit 0
fi

$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'gpu_check: no CUDA GPU')"
start=$SECONDS
tag=$($PY -c "from benchmarks.common import machine_tag; print(machine_tag())")
copy_out() {
  if [[ -n "${OUT:-}" ]]; then
    mkdir -p "$OUT/$tag" && cp benchmarks/results/"$tag"/*.json "$OUT/$tag/" 2>/dev/null || true
  fi
}
failed=()
for step in "${STEPS[@]}"; do  # a failing step is reported at the end; the next ones still run
  echo "=== $PY $step  ($((SECONDS - start)) s in)"
  eval "$PY $step" || failed+=("$step")
  copy_out
done
$PY -m benchmarks.summary >/dev/null || true
copy_out
echo "=== gpu_check: done in $((SECONDS - start)) s; results in benchmarks/results/$tag/"
if [[ -n "${OUT:-}" ]]; then cp benchmarks/results/"$tag"/*.md "$OUT/$tag/" 2>/dev/null || true; fi
if ((${#failed[@]})); then
  printf 'gpu_check: FAILED: %s\n' "${failed[@]}"
  exit 1
fi
