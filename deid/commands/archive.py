"""``deid archive``: de-identify a whole archive on Ray (same as ``python -m ray_jobs.deidentify``).

    deid archive --config configs/archive.yaml
    deid archive --manifest archive/manifest.csv --out deid_out --methods blur,mask
    RAY_ADDRESS=HEAD:6379 deid archive ...            # a driver on a cluster node (or use `ray job submit`)

The manifest is a CSV / Parquet file with columns ``video`` (path, relative to the
manifest's folder or ``--root``), optionally ``patient_id``, ``donor``, ``methods`` and
``video_id`` — or a folder, scanned for videos. Bad rows are reported one by one and the
rest still run. Outputs mirror the archive's folders under ``--out``; ``status.parquet``
there has one row per (video, method). With ``--set io.output_names=pseudonym`` outputs
are named after the inputs' hashes and ``status.parquet``, the evaluation and the report
(which name the inputs) go to ``<out>.records`` beside ``--out`` (or ``--records DIR``),
so ``--out`` can be shared as it is. Rerunning skips what is already done with the same
configuration; a killed run resumes. Exit code 1 when any video failed.

Private files (segments, swap models) go to ``.<out name>.deid-work`` beside ``--out``, or
to a sub-folder deid makes in ``ray.work_dir`` (which may be shared: nothing else in it is
ever changed). A work folder over the archive or the output folder is refused.
"""

from __future__ import annotations

import argparse

from . import add_config_args, help_text


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The archive job's options (shared with ``python -m ray_jobs.deidentify``)."""
    p.add_argument("--manifest", "-i", metavar="PATH", help="CSV / Parquet manifest, or a folder of videos (config: ray.manifest)")
    p.add_argument("--root", metavar="DIR", help="archive root: relative paths start here and no row may leave it (ray.archive_root)")
    p.add_argument("--out", "-o", metavar="DIR", help="output folder (ray.out_dir)")
    p.add_argument("--methods", "-m", metavar="LIST", help="default methods for rows without a methods column, e.g. blur,mask (ray.methods)")
    p.add_argument("--donor", help="default swap donor for rows without one (swap.donor)")
    ev = p.add_mutually_exclusive_group()
    ev.add_argument("--evaluate", dest="evaluate", action="store_true", default=None, help="evaluate every output (ray.evaluate)")
    ev.add_argument("--no-evaluate", dest="evaluate", action="store_false", help="do not evaluate")
    p.add_argument("--records", metavar="DIR",
                   help="status.parquet, the evaluation and the report, which name the inputs (ray.records_dir; default "
                        "--out, or with io.output_names=pseudonym <out>.records beside it, never inside --out then)")
    p.add_argument("--metrics", metavar="DIR", help="evaluation folder (METRICS_DIR; default <records>/metrics)")
    rp = p.add_mutually_exclusive_group()
    rp.add_argument("--report", metavar="HTML", help="write the HTML report here after evaluating (default <records>/report.html)")
    rp.add_argument("--no-report", action="store_true", help="no HTML report")
    p.add_argument("--overwrite", action="store_true", help="replace outputs this job did not write (never inputs)")
    p.add_argument("--local", action="store_true", help="start a local one-node Ray even when RAY_ADDRESS is set")
    p.add_argument("--json", action="store_true", help="print one JSON summary for scripts")
    p.add_argument("--no-progress", action="store_true", help="no progress bar / summary lines")
    add_config_args(p)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "archive",
        help="de-identify a whole archive on Ray (manifest, segments, status table, resume)",
        description=help_text(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Hand the command line after ``archive`` to ``python -m ray_jobs.deidentify`` (the
    Ray adapter, in its own process: deid itself never imports ray)."""
    from . import run_ray_job

    argv = list(getattr(args, "argv", None) or [])
    rest = argv[argv.index("archive") + 1:] if "archive" in argv else []
    return run_ray_job(["-v"] * min(int(getattr(args, "verbose", 0) or 0), 2) + rest)
