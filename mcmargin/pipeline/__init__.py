"""The top stage: a whole run assembled from the stages below.

- :mod:`.stress`: :func:`~.stress.run_stress`, book and scenarios to a margin dataset;
- :mod:`.config`: config sections (Hydra or plain dicts) to the library's objects;
- :mod:`.runtime`: what a job needs around a run (sweep output paths, the dask scheduler);
- :mod:`.warmup`: fills the compiled kernels' cache at install time (``python -m mcmargin.pipeline.warmup``).
"""
