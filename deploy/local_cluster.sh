#!/usr/bin/env bash
# Start / inspect / stop a single-machine Ray head with token authentication on.
#
#   deploy/local_cluster.sh start   # start the head, print the client env
#   deploy/local_cluster.sh env     # print `export ...` lines for a client shell
#   deploy/local_cluster.sh status  # is it up? (dashboard answers with our token)
#   deploy/local_cluster.sh stop    # stop exactly the processes this script started
#
#   eval "$(deploy/local_cluster.sh env)"
#   ray job submit --working-dir . -- wm-ray train --address auto --steps 20000
#
# Knobs (environment):
#   RAY_BIN                   ray executable (default: <repo>/.venv/bin/ray, then `ray` on PATH)
#   WM_RAY_CPUS               --num-cpus for the head (default 2)
#   WM_RAY_CLUSTER_DIR        state dir: token, Ray temp dir, process-group file
#                             (default /tmp/wm_ray_cluster; keep it short, Ray puts unix
#                             sockets under it and their paths must stay < 108 bytes)
#   WM_RAY_PORT               GCS port (default 6379)
#   WM_RAY_DASHBOARD_PORT     dashboard / job API port, bound to 127.0.0.1 (default 8265)
#   WM_RAY_AGENT_PORT         dashboard agent HTTP port (default 52365)
#   WM_RAY_CLIENT_PORT        Ray client server port (default 10001)
#   WM_RAY_MIN_WORKER_PORT / WM_RAY_MAX_WORKER_PORT   worker port range (default 10002-19999)
#   WM_RAY_START_ARGS         extra arguments appended to `ray start --head`
#   WM_RAY_STOP_GRACE         seconds between SIGTERM and SIGKILL on stop (default 5)
#   WM_RAY_TOKEN_FILE         token file (default $WM_RAY_CLUSTER_DIR/auth_token; reused if it
#                             exists, else created). Point it at ~/.ray/auth_token to share
#                             Ray's default token, so that a bare `ray.init(address="auto")`
#                             on this machine works without any environment variable.
#   RAY_AUTH_TOKEN            if set at `start`, this token is used (and stored in the token
#                             file) instead of a freshly generated one
#
# `stop` never runs `ray stop`: that kills every Ray process on the machine, including
# unrelated `ray.init()` clusters. It signals only the process group recorded at `start`
# and job drivers whose working directory lies inside this cluster's temp dir.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(dirname "$here")"

if [[ -z "${RAY_BIN:-}" ]]; then
    if [[ -x "$repo/.venv/bin/ray" ]]; then
        RAY_BIN="$repo/.venv/bin/ray"
    else
        RAY_BIN="$(command -v ray || true)"
    fi
fi

cluster_dir="${WM_RAY_CLUSTER_DIR:-/tmp/wm_ray_cluster}"
cpus="${WM_RAY_CPUS:-2}"
gcs_port="${WM_RAY_PORT:-6379}"
dash_port="${WM_RAY_DASHBOARD_PORT:-8265}"
agent_port="${WM_RAY_AGENT_PORT:-52365}"
client_port="${WM_RAY_CLIENT_PORT:-10001}"
min_worker_port="${WM_RAY_MIN_WORKER_PORT:-10002}"
max_worker_port="${WM_RAY_MAX_WORKER_PORT:-19999}"
grace="${WM_RAY_STOP_GRACE:-5}"

token_file="${WM_RAY_TOKEN_FILE:-$cluster_dir/auth_token}"
temp_dir="$cluster_dir/ray"
pgid_file="$cluster_dir/pgid"

die() {
    echo "local_cluster.sh: $*" >&2
    exit 1
}

need_ray() {
    [[ -n "$RAY_BIN" && -x "$RAY_BIN" ]] || die "ray CLI not found (set RAY_BIN)"
}

gcs_address() {
    # `ray start` writes the head's GCS address (ip:port) here.
    local f="$temp_dir/ray_current_cluster"
    [[ -s "$f" ]] || return 1
    head -n 1 "$f"
}

# Members of process group $1.
group_members() {
    local pid pg
    while read -r pid pg; do
        [[ "$pg" == "$1" ]] && echo "$pid"
    done < <(ps -e -o pid=,pgid=)
    return 0
}

# The recorded process group, if it still holds one of this cluster's Ray processes (so a
# stale pgid file can never make us signal somebody else's processes). Empty otherwise.
our_pgid() {
    [[ -s "$pgid_file" ]] || return 0
    local pgid pid
    pgid="$(cat "$pgid_file")"
    [[ "$pgid" =~ ^[0-9]+$ ]] || return 0
    for pid in $(group_members "$pgid"); do
        if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$temp_dir"; then
            echo "$pgid"
            return 0
        fi
    done
    return 0
}

# Job drivers run in their own session, with their cwd inside the cluster's temp dir.
driver_pids() {
    local d pid cwd
    for d in /proc/[0-9]*; do
        pid="${d#/proc/}"
        cwd="$(readlink "$d/cwd" 2>/dev/null || true)"
        [[ "$cwd" == "$temp_dir"/* ]] && echo "$pid"
    done
    return 0
}

print_env() {
    local addr
    addr="$(gcs_address)" || die "no running cluster recorded under $cluster_dir (run start)"
    echo "export RAY_AUTH_MODE=token"
    printf 'export RAY_AUTH_TOKEN_PATH=%q\n' "$token_file"
    printf 'export RAY_ADDRESS=%q\n' "$addr"
    echo "export RAY_API_SERVER_ADDRESS=http://127.0.0.1:$dash_port"
}

ensure_token() {
    mkdir -p "$cluster_dir" "$(dirname "$token_file")"
    chmod 700 "$cluster_dir"
    if [[ -n "${RAY_AUTH_TOKEN:-}" ]]; then
        (umask 077 && printf '%s' "$RAY_AUTH_TOKEN" >"$token_file")
    elif [[ ! -s "$token_file" ]]; then
        # 32 random bytes as hex: the same shape `ray get-auth-token --generate` produces.
        (umask 077 && head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$token_file")
    fi
    chmod 600 "$token_file"
}

cmd_start() {
    need_ray
    if [[ -n "$(our_pgid)" ]]; then
        die "a cluster from $cluster_dir is already running (run stop first)"
    fi
    ensure_token
    rm -f "$pgid_file" "$temp_dir/ray_current_cluster"

    local log="$cluster_dir/ray_start.log"
    # setsid: the head's daemons get a process group of their own, which `stop` signals.
    # The venv's bin goes first on PATH so job entrypoints (`python`, `wm-ray`) resolve to it.
    # shellcheck disable=SC2086
    env -u RAY_AUTH_TOKEN -u RAY_ADDRESS \
        RAY_AUTH_MODE=token RAY_AUTH_TOKEN_PATH="$token_file" \
        PATH="$(dirname "$RAY_BIN"):$PATH" \
        setsid "$RAY_BIN" start --head \
        --num-cpus "$cpus" \
        --port "$gcs_port" \
        --dashboard-host 127.0.0.1 \
        --dashboard-port "$dash_port" \
        --dashboard-agent-listen-port "$agent_port" \
        --ray-client-server-port "$client_port" \
        --min-worker-port "$min_worker_port" \
        --max-worker-port "$max_worker_port" \
        --temp-dir "$temp_dir" \
        --disable-usage-stats \
        ${WM_RAY_START_ARGS:-} \
        </dev/null >"$log" 2>&1 &
    local pid=$!
    local rc=0
    wait "$pid" || rc=$?
    # setsid did not need to fork (we are not a group leader), so the group id is its pid.
    echo "$pid" >"$pgid_file"
    if ((rc != 0)) || ! gcs_address >/dev/null; then
        cat "$log" >&2
        cmd_stop >&2 || true
        die "ray start failed (rc=$rc); log: $log"
    fi
    echo "Ray head started (token auth on); log: $log" >&2
    echo "Dashboard / job API: http://127.0.0.1:$dash_port  token file: $token_file" >&2
    echo "Client environment (eval \"\$($0 env)\"):" >&2
    print_env
}

cmd_status() {
    local addr
    addr="$(gcs_address 2>/dev/null)" || addr=""
    if [[ -z "$(our_pgid)" ]]; then
        echo "not running ($cluster_dir)"
        return 1
    fi
    local code
    code="$(curl -s -o /dev/null -w '%{http_code}' \
        -H "Authorization: Bearer $(cat "$token_file")" \
        "http://127.0.0.1:$dash_port/api/version" || true)"
    echo "running: gcs=$addr dashboard=http://127.0.0.1:$dash_port (HTTP $code with token)"
}

cmd_stop() {
    local pids pgid
    pgid="$(our_pgid)"
    pids="$(driver_pids)"
    if [[ -n "$pids" ]]; then
        # shellcheck disable=SC2086
        kill -TERM $pids 2>/dev/null || true
    fi
    if [[ -z "$pgid" ]]; then
        echo "no running cluster recorded under $cluster_dir" >&2
        rm -f "$pgid_file"
        return 0
    fi
    kill -TERM -- "-$pgid" 2>/dev/null || true
    local waited=0
    while [[ -n "$(group_members "$pgid")" ]] && ((waited < grace * 2)); do
        sleep 0.5
        waited=$((waited + 1))
    done
    if [[ -n "$(group_members "$pgid")" ]]; then
        kill -KILL -- "-$pgid" 2>/dev/null || true
        sleep 0.5
    fi
    pids="$(driver_pids)"
    if [[ -n "$pids" ]]; then
        # shellcheck disable=SC2086
        kill -KILL $pids 2>/dev/null || true
    fi
    rm -f "$pgid_file" "$temp_dir/ray_current_cluster"
    echo "stopped Ray head (process group $pgid); token kept in $token_file" >&2
}

case "${1:-}" in
start) cmd_start ;;
env) print_env ;;
status) cmd_status ;;
stop) cmd_stop ;;
*)
    echo "usage: $0 {start|env|status|stop}" >&2
    exit 2
    ;;
esac
