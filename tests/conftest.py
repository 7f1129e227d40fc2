"""Settings of the whole test session.

The suite runs in two pytest workers on CI's 2 cores, each starting Ray clusters and ``wm-ray``
processes: every learner shares its cores with busy processes, the case for passive OpenMP
waiting (``resources.omp_wait``, docs/runtime.md "Placement"). ``OMP_WAIT_POLICY`` in the
environment wins over the config, reaches the Ray clusters and ``wm-ray`` processes the tests
start, and can still be set from outside (``OMP_WAIT_POLICY=... make test``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
