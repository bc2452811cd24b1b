"""Thin Ray adapters for deid — the only package that imports ``ray``.

Everything that decides *what* happens to a video lives in :mod:`deid` (mostly
:mod:`deid.archive`); the modules here only schedule it:

- :mod:`ray_jobs.cluster`: ``ray.init`` — a local one-node instance, or the cluster
  named by ``RAY_ADDRESS`` (a submitted job);
- :mod:`ray_jobs.stages`: the callable-class UDF that renders (video, segment) rows on a
  Ray Data actor pool (models built once per actor), and the plan / finalize tasks;
- :mod:`ray_jobs.train`: per-patient face-swap training, one Ray Train ``TorchTrainer``
  per patient, many patients at once as Ray Tune trials;
- :mod:`ray_jobs.evaluate`: pose and identity models as actor pools over original and
  processed videos, writing the evaluation's partitioned Parquet tables;
- :mod:`ray_jobs.deidentify`: the job entrypoint (``python -m ray_jobs.deidentify``,
  also ``deid archive``), which drives an archive run through the stages.

See docs/ray.md.
"""
