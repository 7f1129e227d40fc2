"""Offline data into replay chunks: ``wm-ray ingest`` (docs/replay.md, "Offline data").

- ``core.py``: :func:`~wm_ray.ingest.core.ingest`, sources to chunk files and ``dataset.json``.
- ``readers.py``: video, ``.npz``/``.npy``, HDF5 and image-folder readers, frame conversion.
- ``command.py``: the ``wm-ray ingest`` parser and handler.
"""
