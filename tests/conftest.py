"""Settings of the whole test session.

The suite runs in two pytest workers on CI's 2 cores, each starting Ray clusters and ``wm-ray``
processes: every learner shares its cores with busy processes, the case for passive OpenMP
waiting (``resources.omp_wait``, docs/runtime.md "Placement"). ``OMP_WAIT_POLICY`` in the
environment wins over the config, reaches the Ray clusters and ``wm-ray`` processes the tests
start, and can still be set from outside (``OMP_WAIT_POLICY=... make test``).

The tests' own torch code runs on one thread, in the full suite and when a test runs alone
alike: two workers on two cores leave no core to a second thread, and a result that depends
on the thread count (the order of a sum's terms) shows up in both. Before, four test modules
set it when imported, so a test ran on one thread in the full suite (every worker collects
every module) and on two alone. The processes a test starts (Ray actors, ``wm-ray``) choose
their own threads.
"""

from __future__ import annotations

import os

import torch

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
torch.set_num_threads(1)
