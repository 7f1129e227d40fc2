"""Invariant 1 of ARCHITECTURE.md: the Ray-free rooms never import ray."""

from __future__ import annotations

import ast
import itertools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "wm_ray"
RAY_FREE = ("models", "replay", "envs", "loops")


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_ray_free_rooms_never_import_ray() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}: {name}"
        for room in RAY_FREE
        for path in (ROOT / room).rglob("*.py")
        for name in _imports(path)
        if name == "ray" or name.startswith("ray.")
    ]
    assert not offenders, offenders


def test_rooms_exist() -> None:
    for room in RAY_FREE:
        assert (ROOT / room / "__init__.py").is_file(), room


def _node(module: str) -> str | None:
    """The room a module belongs to: ``wm_ray.<package>`` (``wm_ray.models.<family>`` inside
    ``models``) or the top-level module itself; None outside wm_ray."""
    parts = module.split(".")
    if parts[0] != "wm_ray" or len(parts) == 1:
        return None
    depth = 3 if parts[1] == "models" and len(parts) > 2 else 2
    return ".".join(parts[:depth])


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _edges() -> dict[str, dict[str, str]]:
    """``{room: {imported room: where}}`` over every import in wm_ray, including imports inside
    functions (a lazy import still ties the rooms together); ``if TYPE_CHECKING:`` blocks and
    the package's own lazy ``__init__`` facade do not count."""
    edges: dict[str, dict[str, str]] = {}
    for path in sorted(ROOT.rglob("*.py")):
        module = _module(path)
        source = _node(module)
        if source is None:
            continue
        tree = ast.parse(path.read_text())
        typing_only = {
            id(inner)
            for node in ast.walk(tree)
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test)
            for inner in ast.walk(node)
        }
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            else:
                continue
            for name in names:
                target = _node(name)
                if target is not None and target != source:
                    edges.setdefault(source, {}).setdefault(target, f"{module}:{node.lineno}")
    return edges


def _cycle(edges: dict[str, dict[str, str]]) -> list[str] | None:
    """One import cycle between rooms, as the list of rooms along it, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, {})):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_rooms() -> None:
    edges = _edges()
    cycle = _cycle(edges)
    if cycle:
        where = [f"{a} -> {b} ({edges[a][b]})" for a, b in itertools.pairwise(cycle)]
        raise AssertionError("import cycle between wm_ray's rooms:\n  " + "\n  ".join(where))


def test_the_cycle_check_finds_a_cycle() -> None:
    edges = {"a": {"b": "a.py:1"}, "b": {"c": "b.py:1"}, "c": {"a": "c.py:1"}, "d": {"a": "d:1"}}
    assert _cycle(edges) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b": "x"}, "b": {}}) is None


def test_only_the_registry_names_the_families() -> None:
    """config.py and the runtime import no family: they reach families through the registry."""
    edges = _edges()
    families = {n for n in ROOT.joinpath("models").iterdir() if (n / "__init__.py").is_file()}
    family_rooms = {f"wm_ray.models.{p.name}" for p in families} - {"wm_ray.models.common"}
    for room in (
        "wm_ray.config",
        "wm_ray.config_io",
        "wm_ray.actors",
        "wm_ray.loops",
        "wm_ray.cli",
    ):
        named = sorted(set(edges.get(room, {})) & family_rooms)
        assert not named, f"{room} imports the families {named}; go through wm_ray.registry"


MAX_LINES = 400


def test_no_module_is_longer_than_400_lines() -> None:
    long = {
        str(path.relative_to(ROOT)): n
        for path in ROOT.rglob("*.py")
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"modules over {MAX_LINES} lines (split them): {long}"


def test_replay_shard_and_weight_store_processes_never_import_torch() -> None:
    """A Ray worker imports its actor's module (and the package around it): for a replay shard
    or the weight store that must not pull in torch (~200 MB per process, measured in a run:
    145 MB per shard instead of 346 MB). The store also unpickles what learners publish: a
    Dreamer agent's packed acting weights (``wm_ray.actors.wire``) must load without torch."""
    import pickle
    import subprocess
    import sys

    from wm_ray.actors.wire import pack
    from wm_ray.config_io import build_config
    from wm_ray.factory import create_model

    config = build_config(["debug", "size_debug"], ["run.model=dreamer"])
    published = pickle.dumps((7, pack(create_model("dreamer", config=config).acting_weights())))
    code = (
        "import pickle, sys; import wm_ray.actors.replay_shard, wm_ray.actors.weights; "
        "from wm_ray.actors import ReplayShard, WeightStore; "
        "store = WeightStore(); version, weights = pickle.loads(sys.stdin.buffer.read()); "
        "assert weights['actor'] and store.version == -1 and version == 7; "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], input=published, capture_output=True)
    assert done.returncode == 0, done.stderr.decode() or "torch was imported"
