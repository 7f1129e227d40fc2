"""Shared helpers of the benchmarks: machine tags, machine info, JSON output, medians."""

from __future__ import annotations

import json
import os
import platform
import re
import statistics
from pathlib import Path
from typing import Any


def machine_tag() -> str:
    """``cuda-<gpu name>`` when a GPU is visible, else ``cpu-<N>core``."""
    try:
        import torch

        if torch.cuda.is_available():
            name = torch.cuda.get_device_name(0)
            return "cuda-" + re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower()
    except ImportError:
        pass
    return f"cpu-{os.cpu_count()}core"


def cpu_model() -> str | None:
    """The CPU's model name with its family and model numbers (Linux), e.g. ``AMD EPYC (family
    25, model 1)``: machines of one tag can be different CPU generations (AVX-512 or not)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    if "model name" not in fields:
        return None
    numbers = f" (family {fields.get('cpu family', '?')}, model {fields.get('model', '?')})"
    return fields["model name"] + numbers


def machine_info() -> dict[str, Any]:
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
    }
    try:
        import numpy
        import torch

        info.update(
            numpy=numpy.__version__,
            torch=torch.__version__,
            torch_threads=torch.get_num_threads(),
            cpu_isa=torch.backends.cpu.get_cpu_capability(),  # what torch's kernels use
            cuda=torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        )
    except ImportError:
        pass
    return info


def write_result(name: str, result: dict[str, Any], out: Path | None = None) -> Path:
    """Write ``result`` (plus machine info) to ``benchmarks/results/<tag>/<name>.json``."""
    path = out or Path(__file__).resolve().parent / "results" / machine_tag() / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    result = {"benchmark": name, **result, "machine": machine_info()}
    path.write_text(json.dumps(result, indent=2) + "\n")
    return path


def median(values: list[float]) -> float:
    return float(statistics.median(values))
