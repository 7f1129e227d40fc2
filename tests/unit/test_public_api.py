"""The public API of ``import wm_ray``, the README's Python API example, and the docs' links."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

import wm_ray

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOC_FILES = [README, *sorted((ROOT / "docs").glob("*.md"))]

FENCE = re.compile(r"^```.*?^```[ \t]*$", re.M | re.S)
LINK = re.compile(r"\]\(([^)\s]+)\)")


@pytest.mark.parametrize("name", wm_ray.__all__)
def test_every_exported_name_resolves(name: str) -> None:
    assert getattr(wm_ray, name) is not None
    assert name in dir(wm_ray)


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'list_everything'"):
        wm_ray.list_everything  # noqa: B018


def test_list_presets_and_list_backends() -> None:
    assert {"list_presets", "list_backends"} <= set(wm_ray.__all__)
    presets = wm_ray.list_presets()
    assert {"debug", "iris"} <= set(presets), presets
    backends = wm_ray.list_backends()
    assert "gymnasium" in backends, backends
    assert backends == wm_ray.list_env_backends()


def _section(text: str, heading: str) -> str:
    """The text under ``## heading`` up to the next heading of the same or a higher level."""
    match = re.search(rf"^## {re.escape(heading)}[ \t]*$(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"README.md has no '## {heading}' section"
    return match.group(1)


def test_readme_python_api_example_runs() -> None:
    section = _section(README.read_text(), "Python API")
    blocks = re.findall(r"^```python\n(.*?)^```", section, re.M | re.S)
    assert len(blocks) == 1, "the Python API section should hold one ```python block"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(blocks[0], "README.md (Python API)", "exec"), {"__name__": "readme"})
    assert "CartPole-v1: return" in out.getvalue(), out.getvalue()


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6} (.+)$", text, re.M)}


def _links(path: Path) -> list[str]:
    text = FENCE.sub("", path.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)  # inline code is not a link
    return LINK.findall(text)


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_point_at_existing_files(doc: Path) -> None:
    broken = []
    for link in _links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", link) or link.startswith("#"):
            continue  # http(s)://, mailto:, ... and anchors within the page
        target, _, anchor = link.partition("#")
        path = (doc.parent / target).resolve()
        if not path.exists():
            broken.append(f"{link} (no file {path})")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{link} (no heading with anchor #{anchor} in {target})")
    assert not broken, f"{doc.relative_to(ROOT)}: broken links: {broken}"
