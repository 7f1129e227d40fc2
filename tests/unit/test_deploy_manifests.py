"""The KubeRay and cluster-launcher deployment files, checked offline.

- Cluster-launcher YAMLs: Ray's own schema (``ray/autoscaler/ray-schema.json``), Ray's config
  preparation as ``ray up`` does it (for the on-prem file up to the provider bootstrap; AWS stops
  before the calls to AWS), token auth for every node, the object store's /dev/shm, one image.
- The RayJob: kind and lifecycle fields, Ray version, token Secret mounted and used in every Pod
  template, /dev/shm and the runs volume in every Ray Pod, one image, a GPU group, no token in
  any file, an entrypoint that ``wm-ray``'s own parser and config builder accept, and Ray's own
  translation of the cluster spec (what KubeRay's autoscaler reads), on whose worker groups the
  actors of the entrypoint's config must fit.

tests/unit stays Ray-free in-process: the checks that need Ray's code run in one subprocess.
``kubectl apply --dry-run=client`` is not used: it needs an API server for discovery.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from wm_ray.cli import _build, make_parser
from wm_ray.config_io import list_presets

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERAY = DEPLOY / "kuberay"
RAYJOB = KUBERAY / "rayjob.yaml"
PVC = KUBERAY / "pvc.yaml"
LAUNCHER = DEPLOY / "cluster-launcher"
LAUNCHER_YAMLS = sorted(LAUNCHER.glob("*.yaml"))
RAY_VERSION = importlib.metadata.version("ray")
TOKEN_LIKE = re.compile(r"(?<![0-9a-fA-F])[0-9a-fA-F]{64}(?![0-9a-fA-F])")

# Runs in a subprocess (tests/unit never imports ray): Ray's own config code on the files.
RAY_CHECKS = r"""
import copy, json, shlex, sys, traceback

import yaml
from ray.autoscaler._private.commands import _bootstrap_config
from ray.autoscaler._private.kuberay.autoscaling_config import (
    _derive_autoscaling_config_from_ray_cr,
)
from ray.autoscaler._private.util import prepare_config, validate_config

from wm_ray.actors.placement import plan
from wm_ray.cli import _build, make_parser

paths = json.loads(sys.argv[1])


def launcher(path):
    with open(path) as f:
        config = yaml.safe_load(f)
    if config["provider"]["type"] == "local":
        # What `ray up` resolves before it connects anywhere: defaults, the on-prem node type,
        # schema and consistency checks, the provider's bootstrap. No cache file is written.
        resolved = _bootstrap_config(copy.deepcopy(config), no_config_cache=True)
    else:
        # Cloud providers' bootstrap calls the cloud's API: stop after Ray's preparation.
        resolved = prepare_config(copy.deepcopy(config))
        validate_config(resolved)
    return {
        "node_types": resolved["available_node_types"],
        "head_node_type": resolved["head_node_type"],
        "max_workers": resolved["max_workers"],
        "docker": resolved["docker"],
    }


def kuberay(path):
    with open(path) as f:
        rayjob = next(d for d in yaml.safe_load_all(f) if d)
    spec = rayjob["spec"]["rayClusterSpec"]
    derived = _derive_autoscaling_config_from_ray_cr(
        {"metadata": {"name": rayjob["metadata"]["name"], "namespace": "default"}, "spec": spec}
    )
    types = derived["available_node_types"]
    nodes = [dict(types["headgroup"]["resources"])]
    for group in spec.get("workerGroupSpecs", []):
        resources = types[group["groupName"]]["resources"]
        nodes += [dict(resources) for _ in range(group["replicas"])]
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    bundles = [b for _, _, b in plan(_build(make_parser().parse_args(argv[1:])).resources)]
    unplaced = []  # first fit, largest bundles first
    for bundle in sorted(bundles, key=lambda b: (-b.get("GPU", 0), -b.get("CPU", 0))):
        for node in nodes:
            if all(node.get(k, 0) >= v for k, v in bundle.items()):
                for k, v in bundle.items():
                    node[k] -= v
                break
        else:
            unplaced.append(bundle)
    return {"node_types": types, "bundles": bundles, "unplaced": unplaced}


def attempt(check, path):
    try:
        return check(path)
    except BaseException:  # reported by the test that needs this section
        return {"error": traceback.format_exc()}


out = {
    "launcher": {path: attempt(launcher, path) for path in paths["launcher"]},
    "kuberay": attempt(kuberay, paths["rayjob"]),
}
with open(paths["out"], "w") as f:
    json.dump(out, f)
"""


@pytest.fixture(scope="module")
def ray_checks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("ray_checks") / "out.json"
    paths = {"launcher": [str(p) for p in LAUNCHER_YAMLS], "rayjob": str(RAYJOB), "out": str(out)}
    result = subprocess.run(
        [sys.executable, "-c", RAY_CHECKS, json.dumps(paths)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert result.returncode == 0, f"the checks crashed:\n{result.stdout}\n{result.stderr}"
    return dict(json.loads(out.read_text()))


def load(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text()))


# ----------------------------------------------------------------------------- cluster launcher


def test_there_are_launcher_files_for_on_prem_and_aws() -> None:
    providers = {load(p)["provider"]["type"] for p in LAUNCHER_YAMLS}
    assert providers == {"local", "aws"}, LAUNCHER_YAMLS


@pytest.mark.parametrize("path", LAUNCHER_YAMLS, ids=lambda p: p.name)
def test_launcher_yaml_matches_rays_schema(path: Path) -> None:
    spec = importlib.util.find_spec("ray")  # locates the package without importing it
    assert spec is not None and spec.origin is not None
    schema_path = Path(spec.origin).parent / "autoscaler" / "ray-schema.json"
    jsonschema.validate(load(path), json.loads(schema_path.read_text()))


def test_launcher_yamls_pass_rays_config_preparation(ray_checks: dict[str, Any]) -> None:
    resolved = ray_checks["launcher"]
    assert set(resolved) == {str(p) for p in LAUNCHER_YAMLS}
    for path, config in resolved.items():
        assert "error" not in config, f"Ray rejects {path}:\n{config.get('error')}"
        raw = load(Path(path))
        assert config["docker"]["image"] == raw["docker"]["image"], path
        if raw["provider"]["type"] == "local":
            workers = len(raw["provider"]["worker_ips"])
            (node_type,) = config["node_types"].values()
            assert node_type["max_workers"] == workers == config["max_workers"], path
        else:
            types = config["node_types"]
            head = types[config["head_node_type"]]
            assert head["max_workers"] == 0, "the head node type must not count as a worker"
            gpu = [t for t in types.values() if t["resources"].get("GPU", 0) >= 1]
            assert gpu and all(t["min_workers"] == 0 for t in gpu), "GPU nodes on demand only"
            assert config["max_workers"] >= sum(t.get("min_workers", 0) for t in types.values())


def _run_options(config: dict[str, Any]) -> list[str]:
    return [str(option) for option in config["docker"]["run_options"]]


@pytest.mark.parametrize("path", LAUNCHER_YAMLS, ids=lambda p: p.name)
def test_launcher_yaml_turns_token_auth_on_everywhere(path: Path) -> None:
    config = load(path)
    options = _run_options(config)
    assert "--env RAY_AUTH_MODE=token" in options, options
    paths = [o.split("=", 1)[1] for o in options if o.startswith("--env RAY_AUTH_TOKEN_PATH=")]
    assert len(paths) == 1, options
    token_path = paths[0]
    # the token file reaches every node through file_mounts, from outside the repository
    source = config["file_mounts"][token_path]
    assert source.startswith("~/") or Path(source).is_absolute(), source
    assert ROOT not in Path(source).expanduser().resolve().parents, "token inside the repo"
    assert not any(o.startswith("--env RAY_AUTH_TOKEN=") for o in options), "token in env"
    # and every `ray start` says so itself (the commands work without the run options too)
    starts = [
        c
        for c in config["head_start_ray_commands"] + config["worker_start_ray_commands"]
        if "ray start" in c
    ]
    assert len(starts) == 2, starts
    for command in starts:
        words = command.split()
        assert "RAY_AUTH_MODE=token" in words, command
        assert f"RAY_AUTH_TOKEN_PATH={token_path}" in words, command
        assert words.index("RAY_AUTH_MODE=token") < words.index("start"), command
    (head,) = [c for c in starts if "--head" in c]
    assert "--dashboard-host=127.0.0.1" in head.split(), "dashboard beyond the head's loopback"
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head.split()


@pytest.mark.parametrize("path", LAUNCHER_YAMLS, ids=lambda p: p.name)
def test_launcher_yaml_uses_one_image_shm_and_shared_runs(path: Path) -> None:
    config = load(path)
    docker = config["docker"]
    assert docker["image"] and docker["container_name"]
    assert "head_image" not in docker and "worker_image" not in docker, "one image for all"
    for name, node_type in config.get("available_node_types", {}).items():
        assert "worker_image" not in node_type.get("docker", {}), name
    options = _run_options(config)
    shm = [o.split("=", 1)[1] for o in options if o.startswith("--shm-size=")]
    assert len(shm) == 1 and re.fullmatch(r"\d+g", shm[0]) and int(shm[0][:-1]) >= 2, options
    assert any(re.fullmatch(r"--volume \S+:/runs", o) for o in options), "no shared /runs"
    for command in config["setup_commands"] + config.get("head_setup_commands", []):
        assert "pip install" not in command, "the image holds everything; setup must not reinstall"
    assert any(f"'{RAY_VERSION}'" in c for c in config["setup_commands"]), "no version check"


def test_image_has_ssh_and_rsync_for_the_launcher_and_stays_non_root() -> None:
    text = (ROOT / "docker" / "Dockerfile").read_text()
    joined = text.replace("\\\n", " ")  # one line per instruction
    installs = [line for line in joined.splitlines() if "apt-get install" in line]
    assert any(re.search(r"\bopenssh-client\b", line) for line in installs), installs
    assert any(re.search(r"\brsync\b", line) for line in installs), installs
    users = [line.split()[1] for line in text.splitlines() if line.startswith("USER ")]
    assert users and users[-1] == "wm", users


# ----------------------------------------------------------------------------------- KubeRay


@pytest.fixture(scope="module")
def rayjob() -> dict[str, Any]:
    documents = [d for d in yaml.safe_load_all(RAYJOB.read_text()) if d is not None]
    assert len(documents) == 1, "rayjob.yaml: one RayJob document"
    return dict(documents[0])


def pod_templates(rayjob: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every Pod spec of the RayJob by role: head, worker group names, submitter."""
    cluster = rayjob["spec"]["rayClusterSpec"]
    pods = {"head": cluster["headGroupSpec"]["template"]["spec"]}
    for group in cluster["workerGroupSpecs"]:
        pods[f"worker:{group['groupName']}"] = group["template"]["spec"]
    pods["submitter"] = rayjob["spec"]["submitterPodTemplate"]["spec"]
    return pods


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container.get("env", [])}


def mounts_of(pod: dict[str, Any]) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Mount path -> (volume mount, volume) of the pod's first (Ray) container."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    return {m["mountPath"]: (m, volumes[m["name"]]) for m in pod["containers"][0]["volumeMounts"]}


def test_rayjob_kind_lifecycle_and_ray_version(rayjob: dict[str, Any]) -> None:
    assert rayjob["apiVersion"] == "ray.io/v1" and rayjob["kind"] == "RayJob"
    spec = rayjob["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] > 0
    assert isinstance(spec["activeDeadlineSeconds"], int) and spec["activeDeadlineSeconds"] > 0
    assert spec["backoffLimit"] == 0, "a retry would restart the run instead of resuming it"
    assert spec.get("submissionMode", "K8sJobMode") == "K8sJobMode"
    cluster = spec["rayClusterSpec"]
    assert cluster["rayVersion"] == RAY_VERSION
    assert "num-cpus" in cluster["headGroupSpec"]["rayStartParams"]


def test_every_pod_template_uses_the_token_secret_as_a_file(rayjob: dict[str, Any]) -> None:
    auth = rayjob["spec"]["rayClusterSpec"]["authOptions"]
    assert auth["mode"] == "token"
    secret = auth["secretName"]
    pods = pod_templates(rayjob)
    assert set(pods) >= {"head", "worker:cpu", "worker:gpu", "submitter"}, set(pods)
    for role, pod in pods.items():
        container = pod["containers"][0]
        env = env_of(container)
        assert env["RAY_AUTH_MODE"].get("value") == "token", role
        assert "RAY_AUTH_TOKEN" not in env, f"{role}: token as an environment variable"
        token_path = env["RAY_AUTH_TOKEN_PATH"]["value"]
        mount, volume = mounts_of(pod)[str(Path(token_path).parent)]
        assert mount.get("readOnly") is True, role
        assert volume["secret"]["secretName"] == secret, role
        items = {i["key"]: i["path"] for i in volume["secret"].get("items", [])}
        assert items.get("auth_token", "auth_token") == Path(token_path).name, role
        mode = volume["secret"].get("defaultMode", 0o644)
        assert mode & 0o007 == 0, f"{role}: token file readable by others ({mode:o})"


def test_ray_pods_have_shm_runs_volume_and_resources(rayjob: dict[str, Any]) -> None:
    claim = load(PVC)
    assert claim["kind"] == "PersistentVolumeClaim"
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    runs_paths = set()
    for role, pod in pod_templates(rayjob).items():
        if role == "submitter":
            continue  # runs `ray job submit` only: no object store, no run dir
        mounts = mounts_of(pod)
        _, shm = mounts["/dev/shm"]
        assert shm["emptyDir"]["medium"] == "Memory", role
        runs = [
            path
            for path, (_, volume) in mounts.items()
            if volume.get("persistentVolumeClaim", {}).get("claimName") == claim["metadata"]["name"]
        ]
        assert len(runs) == 1, f"{role} does not mount the runs claim"
        runs_paths.update(runs)
        resources = pod["containers"][0]["resources"]
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources[kind]), f"{role}: {kind}"
        assert pod["securityContext"]["runAsNonRoot"] is True, role
    assert len(runs_paths) == 1, f"runs volume at different paths: {runs_paths}"
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    run_dir = make_parser().parse_args(argv[1:]).run_dir
    assert Path(run_dir).parent == Path(runs_paths.pop()), run_dir


def test_one_image_everywhere_and_an_optional_gpu_group(rayjob: dict[str, Any]) -> None:
    images = {c["image"] for pod in pod_templates(rayjob).values() for c in pod["containers"]}
    assert len(images) == 1, f"Ray needs equal Ray/Python versions on all nodes: {images}"
    groups = {g["groupName"]: g for g in rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]}
    gpu = groups["gpu"]
    assert gpu["replicas"] == 0, "the GPU group is opt-in"
    assert gpu["minReplicas"] <= gpu["replicas"] <= gpu["maxReplicas"]
    resources = gpu["template"]["spec"]["containers"][0]["resources"]
    assert int(resources["limits"]["nvidia.com/gpu"]) >= 1
    for name, group in groups.items():
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"], name
        assert "nvidia.com/gpu" not in str(group["template"]) or name == "gpu", name
    assert groups["cpu"]["replicas"] >= 1


def test_entrypoint_is_a_valid_wm_ray_train_command(rayjob: dict[str, Any]) -> None:
    argv = shlex.split(rayjob["spec"]["entrypoint"])
    assert argv[:2] == ["wm-ray", "train"], argv
    args = make_parser().parse_args(argv[1:])  # exits (SystemExit) on an unknown option
    assert args.address == "auto"
    assert not args.single_process and not args.resume
    presets = set(list_presets())
    for name in args.configs:
        assert name in presets or f"resources/{name}" in presets, f"no preset {name!r}"
    config = _build(args)  # presets and --set overrides resolve to a valid config
    assert config.run.run_dir == args.run_dir
    assert Path(config.run.run_dir).is_absolute()
    assert config.run.name, "name the run: it prefixes the actor names on the cluster"


def test_rays_kuberay_translation_accepts_the_cluster_and_the_run_fits(
    rayjob: dict[str, Any], ray_checks: dict[str, Any]
) -> None:
    checks = ray_checks["kuberay"]
    assert "error" not in checks, f"Ray's KubeRay translation failed:\n{checks.get('error')}"
    types = checks["node_types"]
    assert types["headgroup"]["resources"]["CPU"] == 0
    assert types["cpu"]["resources"]["CPU"] >= 1
    assert types["gpu"]["resources"]["GPU"] == 1
    assert checks["bundles"], "the entrypoint's config places no actor"
    assert checks["unplaced"] == [], (
        f"the entrypoint's actors do not fit on the worker groups: {checks['unplaced']} left "
        f"over of {checks['bundles']}"
    )


def test_docs_create_the_secret_the_manifest_mounts(rayjob: dict[str, Any]) -> None:
    secret = rayjob["spec"]["rayClusterSpec"]["authOptions"]["secretName"]
    command = f"kubectl create secret generic {secret} --from-file=auth_token="
    assert command in (DEPLOY / "kubernetes.md").read_text()
    assert command in RAYJOB.read_text()


# -------------------------------------------------------------------------------- all files


def test_no_token_or_secret_value_in_any_deploy_file() -> None:
    files = [p for p in DEPLOY.rglob("*") if p.is_file()]
    assert RAYJOB in files and LAUNCHER_YAMLS[0] in files
    for path in files:
        text = path.read_text()
        assert not TOKEN_LIKE.search(text), f"{path}: looks like a 64-hex token"
        assert not re.search(r"RAY_AUTH_TOKEN=[0-9a-fA-F]{16}", text), path
    for path in [*KUBERAY.glob("*.yaml")]:
        for document in yaml.safe_load_all(path.read_text()):
            assert document["kind"] != "Secret", f"{path}: create the Secret with kubectl"
