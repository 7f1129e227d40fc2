#!/usr/bin/env bash
# Container health: on a Ray node (a raylet runs here) the node's GCS must answer
# `ray health-check`; in any other container (a job driver, TensorBoard) wm_ray must import.
set -eu
if pgrep -f raylet >/dev/null 2>&1; then
  exec ray health-check --address "${RAY_HEAD_ADDRESS:-127.0.0.1:6379}"
fi
exec python -c "import wm_ray"
