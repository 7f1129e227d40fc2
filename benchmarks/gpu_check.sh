#!/usr/bin/env bash
# The GPU checks of the learner, in one go (under 8 minutes on one H100/H200):
#   1. the CUDA tests: CUDA vs CPU updates with device-independent draws (eager, compiled,
#      captured as CUDA graphs, bf16), captured vs eager over many replays, checkpoint/resume
#   2. the learner bench: the three JAX-matched sizes, image observations, B16 x T64,
#      eager / compiled / captured, fp32 and bf16 (kernels, launches, GPU busy share)
#   3. IRIS at its paper preset (B64 x T20): the update with eager / compiled / captured
#      imagination, and the imagination alone (tokens/s of each mode vs full recomputation)
#   4. the update profile at the 12M JAX-matched size
# Results go to benchmarks/results/cuda-<gpu>/ (and $OUT, when set, for the device tool), where
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
  "benchmarks/learner_bench.py --families dreamer --sizes jax1m jax12m jax50m --obs image --modes eager compiled captured --precision fp32 bf16 --repeats 5"
  "benchmarks/learner_bench.py --families iris --iris-sizes paper --modes eager compiled captured --repeats 3"
  "benchmarks/iris_bench.py --sizes paper --batch 64 --horizon 20 --modes eager compiled captured --repeats 3"
  "benchmarks/profile_update.py --sizes jax12m --obs image --repeats 3"
)

if [[ "${1:-}" == "--dry-run" ]]; then
  for step in "${STEPS[@]}"; do echo "$PY $step"; done
  # every step's script exists and its arguments parse
  $PY - "${STEPS[@]}" <<'EOF'
import shlex, sys
sys.path.insert(0, ".")
from pathlib import Path
from benchmarks import iris_bench, learner_bench, profile_update
for step in sys.argv[1:]:
    argv = shlex.split(step)
    if argv[0] == "-m":
        files = [a for a in argv if a.startswith("tests/")]
    else:
        files, parse = [argv[0]], {"benchmarks/learner_bench.py": learner_bench.parser,
                                   "benchmarks/iris_bench.py": iris_bench.parser,
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
for step in "${STEPS[@]}"; do
  echo "=== $PY $step"
  eval "$PY $step"
done
tag=$($PY -c "from benchmarks.common import machine_tag; print(machine_tag())")
echo "=== gpu_check: done in $((SECONDS - start)) s; results in benchmarks/results/$tag/"
if [[ -n "${OUT:-}" ]]; then
  mkdir -p "$OUT/$tag" && cp benchmarks/results/"$tag"/*.json benchmarks/results/"$tag"/*.md "$OUT/$tag/" 2>/dev/null || true
fi
