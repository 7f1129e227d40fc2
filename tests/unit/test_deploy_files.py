"""The docker deployment files: the compose file validates, publishes the dashboard / job API
and TensorBoard on the host's loopback only, keeps the GCS unpublished, turns token auth on with
the token as a secret, and the Dockerfile builds a non-root image with a healthcheck."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker" / "compose.yaml"
DOCKERFILE = ROOT / "docker" / "Dockerfile"


def compose_command() -> list[str] | None:
    """``docker compose`` (v2 plugin) where it works, else Debian's ``docker-compose`` (v1)."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


def resolved_config(tmp_path: Path, **env: str) -> dict[str, Any]:
    """``compose config`` output: the file as compose itself reads it (anchors merged, variables
    substituted), with a throwaway token file."""
    command = compose_command()
    if command is None:
        message = (
            "neither `docker compose` nor `docker-compose` is installed (make test installs "
            "Debian's docker-compose where apt is available)"
        )
        if os.environ.get("WM_RAY_REQUIRE_COMPOSE") == "1":  # set by .ci/run
            pytest.fail(message)
        pytest.skip(message)
    token = tmp_path / "ray_token"
    token.write_text("0" * 64 + "\n")
    environ = {**os.environ, "WM_RAY_TOKEN_FILE": str(token), **env}
    base = [*command, "-f", str(COMPOSE)]
    check = subprocess.run([*base, "config", "-q"], capture_output=True, text=True, env=environ)
    assert check.returncode == 0, check.stderr
    out = subprocess.run([*base, "config"], capture_output=True, text=True, env=environ)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


def published(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host ip, container port) of every published port, in short or long syntax."""
    ports = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.append((str(port.get("host_ip", "")), str(port.get("target"))))
        else:
            parts = str(port).split(":")
            host_ip = parts[0] if len(parts) == 3 else ""
            ports.append((host_ip, parts[-1].removesuffix("/tcp")))
    return ports


def test_compose_file_validates_and_publishes_only_on_loopback(tmp_path: Path) -> None:
    config = resolved_config(tmp_path)
    services = config["services"]
    assert {"ray-head", "ray-worker", "tensorboard"} <= set(services)
    head = published(services["ray-head"])
    assert head == [("127.0.0.1", "8265")], head
    for name, service in services.items():
        for host_ip, target in published(service):
            assert host_ip == "127.0.0.1", f"{name} publishes {target} on {host_ip or 'all'}"
            assert target != "6379", f"{name} publishes the GCS port"
    for name in ("ray-head", "ray-worker"):
        env = services[name]["environment"]
        assert env["RAY_AUTH_MODE"] == "token"
        assert env["RAY_AUTH_TOKEN_PATH"] == "/run/secrets/ray_token"
        assert "RAY_AUTH_TOKEN" not in env, "the token itself must not be in the environment"
        secrets = [s if isinstance(s, str) else s["source"] for s in services[name]["secrets"]]
        assert secrets == ["ray_token"]
    # a moved port stays on loopback too
    moved = resolved_config(tmp_path, WM_RAY_DASHBOARD_PORT="18265")
    assert published(moved["services"]["ray-head"]) == [("127.0.0.1", "8265")]


def _bytes(size: str) -> int:
    """A compose size ("4gb", "512m") or a plain byte count, in bytes."""
    match = re.fullmatch(r"(\d+)\s*([kmg]?)b?", size.strip().lower())
    assert match, f"unreadable size {size!r}"
    return int(match[1]) * 1024 ** " kmg".index(match[2] or " ")


@pytest.mark.parametrize(
    "env", [{}, {"WM_RAY_SHM_SIZE": "2gb", "WM_RAY_OBJECT_STORE_BYTES": "1500000000"}]
)
def test_object_store_fits_in_shm(tmp_path: Path, env: dict[str, str]) -> None:
    """Ray puts the object store in /dev/shm only when it fits; otherwise it silently uses a
    much slower store under /tmp (seen in the docker e2e run before --object-store-memory)."""
    services = resolved_config(tmp_path, **env)["services"]
    for name in ("ray-head", "ray-worker"):
        command = services[name]["command"]
        command = " ".join(command) if isinstance(command, list) else command
        store = re.search(r"--object-store-memory (\d+)", command)
        assert store, f"{name}: no --object-store-memory"
        shm = _bytes(str(services[name]["shm_size"]))
        assert int(store[1]) < shm, f"{name}: object store {store[1]} B >= shm_size {shm} B"


def test_compose_file_object_store_gpu_profile_and_token_secret() -> None:
    config = yaml.safe_load(COMPOSE.read_text())
    services = config["services"]
    for name in ("ray-head", "ray-worker", "ray-gpu-worker"):
        shm = str(services[name]["shm_size"])
        assert "gb" in shm, f"{name}: shm_size {shm} (the object store needs GBs of /dev/shm)"
    gpu = services["ray-gpu-worker"]
    assert gpu["profiles"] == ["gpu"], "the GPU worker must be opt-in"
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and devices[0]["capabilities"] == ["gpu"]
    assert "--num-gpus 1" in gpu["command"]
    assert "file" in config["secrets"]["ray_token"]
    assert "--dashboard-host 0.0.0.0" in services["ray-head"]["command"]
    assert "ray-head:6379" in services["ray-worker"]["command"]


def test_dockerfile_is_parameterized_non_root_and_has_a_healthcheck() -> None:
    text = DOCKERFILE.read_text()
    for arg in ("BASE_IMAGE", "TORCH_SPEC", "TORCH_INDEX_URL", "EXTRAS"):
        assert f"ARG {arg}" in text, arg
    assert "FROM ${BASE_IMAGE}" in text
    assert "MUJOCO_GL=egl" in text and "libegl1" in text
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0"), users
    assert "HEALTHCHECK" in text
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "docker/secrets" in ignored and ".venv" in ignored, "secrets or venv in the build"
