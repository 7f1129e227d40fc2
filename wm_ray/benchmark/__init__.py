"""``wm-ray benchmark``: suites of training runs over seeds, and their reliable aggregates.

- ``suites``: the built-in suites (``atari100k``, ``dmc_vision``, ``dmc_proprio``) and YAML
  task lists, their protocols; the Atari human / random table and published scores (``data/``).
- ``runner``: one ordinary run directory per (task, seed), trained by ``wm-ray train``
  subprocesses, resumable; each run's score.
- ``stats``: mean, median, IQM, optimality gap, stratified bootstrap intervals, profiles.
- ``report``: per-seed scores, per-task and aggregate tables (CSV, JSON, Markdown, LaTeX), the
  performance profile PNG.
- ``command``: the CLI.

No Ray here: the runs are subprocesses (which join a cluster with ``--address``).
"""
