#!/usr/bin/env bash
# End-to-end test of the docker deployment (`make e2e-docker`):
#
#   1. a Docker daemon: the running one, or (as root) Debian's docker.io installed and dockerd
#      started for the test and stopped afterwards;
#   2. a base image: $WM_RAY_BASE_IMAGE, else python:3.11-slim-bookworm if it can be pulled,
#      else a Debian bookworm image built here with debootstrap (no registry needed);
#   3. the wm-ray image from docker/Dockerfile: online, or, when a container cannot install from
#      PyPI (no route, or a TLS proxy whose CA only the host trusts), offline from a wheelhouse
#      that the host's pip downloads and serves on 127.0.0.1 (--no-index --find-links);
#   4. the compose cluster (docker/compose.yaml) with a head and 2 workers, token auth on;
#   5. a training job submitted from the host with `ray job submit` and the token; checks: the
#      job SUCCEEDED, its actors ran on more than one node, the run dir on the shared volume has
#      metrics.jsonl at the requested step count and a checkpoint that verifies; a request
#      without the token is refused; the job API does not answer on a non-loopback address;
#   6. teardown: compose down (containers, network, volume), the test's token, the wheelhouse
#      server, and the daemon if this script started it. The images stay as a build cache.
#
# Knobs: WM_RAY_BASE_IMAGE, WM_RAY_E2E_OFFLINE (auto|1|0), WM_RAY_E2E_STEPS (default 1000),
# WM_RAY_E2E_KEEP=1 (leave the cluster up for a look; `docker-compose -p wm-ray-e2e down -v`),
# WM_RAY_E2E_WORK (scratch dir, default /tmp/wm-ray-e2e-docker).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
work="${WM_RAY_E2E_WORK:-/tmp/wm-ray-e2e-docker}"
project=wm-ray-e2e
workers=2
steps="${WM_RAY_E2E_STEPS:-1000}"
run="e2e-$(date +%Y%m%d-%H%M%S)"
image=wm-ray:e2e
torch_spec="torch==2.13.0"
extras="atari,dmc,mujoco"
ray_bin="$repo/.venv/bin/ray"
py="$repo/.venv/bin/python"
started=$(date +%s)

export WM_RAY_IMAGE="$image"
export WM_RAY_DASHBOARD_PORT="${WM_RAY_DASHBOARD_PORT:-18265}"   # clear of a local head on 8265
export WM_RAY_TENSORBOARD_PORT="${WM_RAY_TENSORBOARD_PORT:-16006}"
export WM_RAY_TOKEN_FILE="$work/secrets/ray_token"
export WM_RAY_SHM_SIZE="${WM_RAY_SHM_SIZE:-2gb}"
export WM_RAY_OBJECT_STORE_BYTES="${WM_RAY_OBJECT_STORE_BYTES:-1500000000}"

log() { echo "[e2e-docker $(($(date +%s) - started))s] $*"; }
fail() {
    echo "[e2e-docker] FAIL: $*" >&2
    exit 1
}

if docker compose version >/dev/null 2>&1; then compose=(docker compose); else compose=(docker-compose); fi
dc() { "${compose[@]}" -f docker/compose.yaml -p "$project" "$@"; }

daemon_pid="" server_pid=""
cleanup() {
    local rc=$?
    set +e
    if [[ "${WM_RAY_E2E_KEEP:-0}" == 1 && $rc == 0 ]]; then
        log "WM_RAY_E2E_KEEP=1: cluster left up (project $project, dashboard 127.0.0.1:$WM_RAY_DASHBOARD_PORT)"
    else
        if [[ $rc != 0 ]] && docker info >/dev/null 2>&1; then
            echo "---- container logs (last 40 lines each) ----" >&2
            dc logs --tail 40 >&2 2>/dev/null
        fi
        dc down -v --remove-orphans >/dev/null 2>&1
        rm -rf "$work/secrets"
    fi
    [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null
    if [[ -n "$daemon_pid" && "${WM_RAY_E2E_KEEP:-0}" != 1 ]]; then
        kill "$daemon_pid" 2>/dev/null && log "stopped the dockerd this test started"
    fi
    if [[ $rc == 0 ]]; then log "PASS"; else echo "[e2e-docker] exit $rc" >&2; fi
}
trap cleanup EXIT

mkdir -p "$work"
[[ -x "$ray_bin" ]] || fail "$ray_bin missing: run 'make setup' first (make e2e-docker does)"

# -- 1. Docker daemon -----------------------------------------------------------------------
need_root() { [[ "$(id -u)" == 0 ]] || fail "$1 (needs root: run as root, or start a Docker daemon)"; }
apt_install() {
    need_root "installing Debian packages: $*"
    log "apt-get install $*"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "$@") >"$work/apt.log" 2>&1 || fail "apt-get install $* failed: $work/apt.log"
}
if ! docker info >/dev/null 2>&1; then
    command -v dockerd >/dev/null || apt_install docker.io
    command -v docker >/dev/null || apt_install docker.io
    need_root "starting dockerd"
    log "starting dockerd (log: $work/dockerd.log)"
    setsid dockerd >"$work/dockerd.log" 2>&1 &
    daemon_pid=$!
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
    docker info >/dev/null 2>&1 || fail "dockerd did not come up: $(tail -5 "$work/dockerd.log")"
fi
"${compose[@]}" version >/dev/null 2>&1 || apt_install docker-compose
log "docker $(docker version --format '{{.Server.Version}}'), compose: ${compose[*]}"

# -- 2. base image --------------------------------------------------------------------------
base="${WM_RAY_BASE_IMAGE:-python:3.11-slim-bookworm}"
if ! docker image inspect "$base" >/dev/null 2>&1 && ! timeout 120 docker pull -q "$base" >/dev/null 2>&1; then
    [[ -n "${WM_RAY_BASE_IMAGE:-}" ]] && fail "base image $base is neither local nor pullable"
    base=wm-ray-base:bookworm
    if ! docker image inspect "$base" >/dev/null 2>&1; then
        log "no registry: building $base with debootstrap"
        command -v debootstrap >/dev/null || apt_install debootstrap
        need_root "debootstrap"
        rm -rf "$work/rootfs"
        debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
            bookworm "$work/rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
            || fail "debootstrap failed: $work/debootstrap.log"
        tar -C "$work/rootfs" -c . | docker import -c 'ENV LANG=C.UTF-8' - "$base" >/dev/null
        rm -rf "$work/rootfs"
    fi
fi
log "base image: $base"

# -- 3. the wm-ray image --------------------------------------------------------------------
offline="${WM_RAY_E2E_OFFLINE:-auto}"
if [[ "$offline" == auto ]]; then
    if docker run --rm "$base" python3 -c \
        "import urllib.request as u; u.urlopen('https://pypi.org/simple/pip/', timeout=15)" >/dev/null 2>&1 \
        && docker run --rm "$base" python3 -c \
        "import urllib.request as u; u.urlopen('https://download.pytorch.org/whl/cpu/', timeout=15)" >/dev/null 2>&1; then
        offline=0
    else
        offline=1
    fi
fi
build_args=(--build-arg "BASE_IMAGE=$base" --build-arg "TORCH_SPEC=$torch_spec" --build-arg "EXTRAS=$extras")
if [[ "$offline" == 1 ]]; then
    wheels="$work/wheelhouse"
    log "containers cannot install from PyPI here: wheelhouse $wheels from the host's pip"
    mkdir -p "$wheels"
    "$py" -m pip download -q -d "$wheels" pip setuptools wheel "$torch_spec" ".[$extras]" \
        >"$work/wheelhouse.log" 2>&1 || fail "pip download failed: $work/wheelhouse.log"
    rm -f "$wheels"/wm_ray-*  # the package itself is built from the source in the image
    port=$("$py" -c "import socket; s=socket.socket(); s.bind(('127.0.0.1', 0)); print(s.getsockname()[1])")
    "$py" -m http.server --bind 127.0.0.1 --directory "$wheels" "$port" >"$work/wheel-server.log" 2>&1 &
    server_pid=$!
    build_args+=(--network host --build-arg TORCH_INDEX_URL=
        --build-arg "PIP_EXTRA_ARGS=--no-index --find-links http://127.0.0.1:$port/")
fi
log "docker build -> $image"
docker build -q -f docker/Dockerfile -t "$image" "${build_args[@]}" . >"$work/build.log" 2>&1 \
    || fail "docker build failed: $(tail -30 "$work/build.log")"
docker run --rm "$image" python -c "import wm_ray, ray, torch; assert ray.__version__ == '2.60.0'" \
    || fail "the image does not import wm_ray / ray 2.60.0 / torch"
[[ "$(docker run --rm "$image" id -u)" != 0 ]] || fail "the image runs as root"

# -- 4. compose cluster ---------------------------------------------------------------------
mkdir -p "$(dirname "$WM_RAY_TOKEN_FILE")" && chmod 700 "$(dirname "$WM_RAY_TOKEN_FILE")"
"$py" -c "import secrets; print(secrets.token_hex(32))" >"$WM_RAY_TOKEN_FILE"
chmod 644 "$WM_RAY_TOKEN_FILE"
dc config -q
log "compose up: head + $workers workers"
dc up -d --no-build --scale "ray-worker=$workers" >"$work/compose-up.log" 2>&1 \
    || fail "compose up failed: $(tail -20 "$work/compose-up.log")"
alive=0
for _ in $(seq 90); do
    alive=$(dc exec -T ray-head python -c \
        "import ray; ray.init(address='auto', logging_level='ERROR'); print(sum(n['Alive'] for n in ray.nodes()))" \
        2>/dev/null | tail -1) || alive=0
    [[ "$alive" == $((workers + 1)) ]] && break
    sleep 2
done
[[ "$alive" == $((workers + 1)) ]] || fail "the cluster has ${alive:-0} live nodes, expected $((workers + 1))"
log "cluster up: $alive nodes"

# -- 5. a submitted training job ------------------------------------------------------------
api="http://127.0.0.1:$WM_RAY_DASHBOARD_PORT"
code=$(curl -s -o /dev/null -w '%{http_code}' "$api/api/jobs/")
[[ "$code" == 401 || "$code" == 403 ]] || fail "the job API answered $code without the token (expected 401/403)"
host_ip=$(hostname -I 2>/dev/null | awk '{print $1}')
if [[ -n "$host_ip" && "$host_ip" != 127.* ]]; then
    if curl -s -m 5 -o /dev/null "http://$host_ip:$WM_RAY_DASHBOARD_PORT/"; then
        fail "the dashboard answers on $host_ip (must be loopback only)"
    fi
fi
job_args=(--address auto --quiet --run-dir "/runs/$run" --configs debug size_debug --steps "$steps"
    --set run.name="$run" resources.env_workers=2 resources.cpus_per_learner=2
    eval.every=500 eval.episodes=1 logging.tensorboard=true)
log "ray job submit -- wm-ray train ${job_args[*]}"
RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$WM_RAY_TOKEN_FILE" timeout 900 "$ray_bin" job submit \
    --address "$api" --submission-id "$run" -- wm-ray train "${job_args[@]}" >"$work/job.log" 2>&1 \
    || fail "the job failed: $(tail -40 "$work/job.log")"
grep -Eq "done: [0-9,]+ env steps" "$work/job.log" || fail "the job log has no 'done: N env steps' line"
token=$(cat "$WM_RAY_TOKEN_FILE")
status=$(curl -s -H "Authorization: Bearer $token" "$api/api/jobs/$run" | "$py" -c \
    "import json, sys; print(json.load(sys.stdin)['status'])")
[[ "$status" == SUCCEEDED ]] || fail "job status: $status"
if dc logs ray-head ray-worker 2>&1 | grep -q "object store is using /tmp"; then
    fail "a node's object store fell back to /tmp (object store larger than shm_size)"
fi

# Where did the job's actors run? (the state API keeps dead actors with their node)
nodes=$(RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$WM_RAY_TOKEN_FILE" "$ray_bin" list actors \
    --address "$api" --detail --format json --limit 1000 2>/dev/null | "$py" -c "
import json, sys
actors = json.load(sys.stdin)
print(len({a['node_id'] for a in actors if a.get('node_id')}), len(actors))")
log "actors of the job: ${nodes#* } on ${nodes%% *} nodes"
[[ "${nodes%% *}" -ge 2 ]] || fail "the job's actors all ran on one node ($nodes)"

# The run dir on the shared volume, checked inside the cluster with wm_ray's own verifier.
dc exec -T ray-head python - "/runs/$run" "$steps" <<'EOF' || fail "run dir check failed"
import json, sys
from pathlib import Path
from wm_ray.rundir.checkpoint import latest_checkpoint, verify_checkpoint

run, steps = Path(sys.argv[1]), int(sys.argv[2])
rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
last = rows[-1]
assert last["counters/env_steps"] == last["counters/acked_steps"] == steps, last
assert any("eval/return" in r for r in rows), "no evaluation in metrics.jsonl"
path = latest_checkpoint(run)
assert path is not None, "no checkpoint"
meta = verify_checkpoint(path)
assert meta["step"] == steps, meta
assert any((run / "tb").glob("events.out.tfevents.*")), "no TensorBoard events"
print(f"run dir ok: {len(rows)} metric rows, checkpoint {path.name} ({len(meta['files'])} files)")
EOF
log "done in $(($(date +%s) - started)) s"
