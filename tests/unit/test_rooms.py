"""Invariant 1 of ARCHITECTURE.md: the Ray-free rooms never import ray."""

from __future__ import annotations

import ast
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
