"""The archive job: ``python -m ray_jobs.deidentify --config configs/archive.yaml``.

Same as ``deid archive``, which runs this module in a subprocess (the library never
imports ray). Runs locally (a one-node Ray started here) or, when ``RAY_ADDRESS`` is
set — as in a job started with ``ray job submit --working-dir . -- python -m
ray_jobs.deidentify ...`` — on that cluster.

The run, as the driver sees it (the work itself is in :mod:`deid.archive`):

1. validate the manifest (bad rows -> failed status rows);
2. plan every video in parallel Ray tasks (probe, sha256, skip what is done, segments);
3. start training the swap model of every patient that needs one (:mod:`ray_jobs.train`,
   Ray Train, in the background);
4. render (video, segment) rows on a Ray Data actor pool (:class:`ray_jobs.stages.SegmentRenderer`),
   streaming: as soon as a video's last segment is in, a finalize task stitches,
   audits and publishes it, and its status rows are written. Videos without a swap
   render first, while the models train; then each wave renders the videos of the
   patients whose models have finished since the last wave;
5. delete each patient's swap model once that patient's videos are published;
6. optionally evaluate into METRICS_DIR (:mod:`ray_jobs.evaluate`) and write the report.

Exit code: 0 all videos done (or skipped as already done) and, with ``--evaluate``,
evaluated; 1 some failed, or the evaluation of some failed (named at the end); 2 the job
could not start (configuration, manifest) or the file system stopped it (a folder it
cannot create or write: one line, and the same command resumes once that is fixed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pickle
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

log = logging.getLogger("ray_jobs.deidentify")


def _echo(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- config


def resolve_config(args: argparse.Namespace):
    """Config file + ``--set`` overrides + the command-line flags (flags win)."""
    from deid.commands import load_cfg
    from deid.errors import ConfigError

    cfg = load_cfg(args)
    r = {}
    for flag, key in (("manifest", "manifest"), ("root", "archive_root"), ("out", "out_dir"), ("methods", "methods"), ("metrics", "metrics_dir"),
                      ("records", "records_dir")):
        v = getattr(args, flag, None)
        if v:
            r[key] = str(v)
    if getattr(args, "evaluate", None) is not None:
        r["evaluate"] = bool(args.evaluate)
    if r:
        cfg = dataclasses.replace(cfg, ray=dataclasses.replace(cfg.ray, **r))
    if getattr(args, "donor", None):
        cfg = dataclasses.replace(cfg, swap=dataclasses.replace(cfg.swap, donor=args.donor))
    if not cfg.ray.manifest:
        raise ConfigError("no manifest: pass --manifest PATH (CSV / Parquet / folder) or set ray.manifest in the config")
    if not cfg.ray.out_dir:
        raise ConfigError("no output folder: pass --out DIR or set ray.out_dir in the config")
    if cfg.ray.train_workers != 1:
        raise ConfigError("ray.train_workers must be 1: the swap training loop is single-process; "
                          "scale out over patients with ray.max_concurrent_trainings")
    _refuse_relative_in_job_package(cfg, getattr(args, "report", None))
    from deid.archive import check_segmenting
    from deid.records import check_outside_outputs, records_folder

    check_segmenting(cfg)  # before any cluster is started
    # under io.output_names=pseudonym nothing that names the inputs may land among the outputs
    records_folder(cfg.ray.out_dir, cfg.io.output_names, cfg.ray.records_dir, "the records folder (--records / ray.records_dir)")
    if cfg.ray.metrics_dir:
        check_outside_outputs(cfg.ray.metrics_dir, cfg.ray.out_dir, cfg.io.output_names, "the metrics folder (--metrics / ray.metrics_dir)")
    if getattr(args, "report", None):
        check_outside_outputs(args.report, cfg.ray.out_dir, cfg.io.output_names, "the report (--report)")
    if not cfg.ray.evaluate:
        given = [f for f, v in (("--metrics", getattr(args, "metrics", None)), ("--report", getattr(args, "report", None))) if v]
        if given:
            log.warning("%s given without --evaluate (ray.evaluate): no evaluation runs, so nothing is written there",
                        " and ".join(given))
    return cfg


def job_package_dir(cwd: Path | None = None) -> Path | None:
    """The copy of the working directory that ``ray job submit --working-dir`` uploaded,
    when the driver runs in it (Ray starts a submitted job's driver there:
    ``.../runtime_resources/working_dir_files/_ray_pkg_<hash>``); None otherwise."""
    here = (cwd or Path.cwd()).resolve()
    for p in (here, *here.parents):
        if p.name.startswith("_ray_pkg_") and p.parent.name == "working_dir_files":
            return p
    return None


def _refuse_relative_in_job_package(cfg: Any, report: str | None) -> None:
    """A submitted job runs in Ray's copy of its working directory: a relative path there
    names a file in that copy — inputs that are not the archive, outputs Ray deletes with
    the package (and never on the storage the other nodes see). Refused, naming the
    setting, before anything starts. The config file itself (``--config configs/...``)
    is part of the upload and may be relative."""
    pkg = job_package_dir()
    if pkg is None:
        return
    from deid.errors import ConfigError

    r = cfg.ray
    paths = [("--manifest / ray.manifest", r.manifest), ("--root / ray.archive_root", r.archive_root),
             ("--out / ray.out_dir", r.out_dir), ("--records / ray.records_dir", r.records_dir),
             ("--metrics / ray.metrics_dir", r.metrics_dir), ("ray.work_dir", r.work_dir),
             ("ray.storage_path", r.storage_path), ("--report", report or ""),
             # the swap's donors and models, and user-supplied model files
             ("swap.donor_library", cfg.swap.donor_library), ("swap.model_dir", cfg.swap.model_dir),
             ("swap.workdir", cfg.swap.workdir), ("detect.model_path", cfg.detect.model_path),
             ("evaluate.pose.model_path", cfg.evaluate.pose.model_path),
             ("evaluate.pose.det_model_path", cfg.evaluate.pose.det_model_path),
             ("evaluate.pose.proto_path", cfg.evaluate.pose.proto_path),
             ("evaluate.identity.model_path", cfg.evaluate.identity.model_path)]
    bad = [f"{what} = {v!r}" for what, v in paths if v and not Path(str(v)).expanduser().is_absolute()]
    if bad:
        raise ConfigError(
            f"relative path(s) in a submitted job: {'; '.join(bad)}. This job runs in the copy of its working directory "
            f"that `ray job submit --working-dir` uploaded ({pkg}), so they would name files in that copy, which Ray "
            "deletes with it; give absolute paths on storage every node sees (e.g. /mnt/deid/out)"
        )


# ----------------------------------------------------------------------------- progress


class _Ticker:
    """Prints the run's summary line every ``every_s`` seconds from a background thread
    (a tqdm bar over videos instead when stderr is a terminal)."""

    def __init__(self, run: Any, every_s: float, echo: Callable[[str], None], enabled: bool = True):
        self.run, self.every_s, self.echo = run, every_s, echo
        self.stop_ev = threading.Event()
        self.bar = None
        self.t: threading.Thread | None = None
        if not enabled or every_s <= 0:
            return
        if sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=run.progress.total, unit="video", desc="archive", leave=True)
        self.t = threading.Thread(target=self._loop, name="archive-progress", daemon=True)
        self.t.start()

    def _loop(self) -> None:
        while not self.stop_ev.wait(1.0 if self.bar is not None else self.every_s):
            self.tick()

    def tick(self) -> None:
        p = self.run.progress
        if self.bar is not None:
            self.bar.n = p.finished
            el = max(1e-9, time.monotonic() - p.t0)
            self.bar.set_postfix(done=p.done, failed=p.failed, skipped=p.skipped, fps=f"{p.frames / el:.1f}")
        else:
            self.echo(p.line())

    def stop(self) -> None:
        self.stop_ev.set()
        if self.t is not None:
            self.t.join(timeout=5)
        if self.bar is not None:
            self.tick()
            self.bar.close()


def _error(message: str, kind: str) -> Exception:
    """A :class:`deid.errors.DeidError` for an error that arrived as data."""
    from deid.errors import DeidError

    e = DeidError(message)
    e.kind = kind or "error"
    return e


# ----------------------------------------------------------------------------- the run


def run_archive(
    cfg: Any,
    manifest: Any,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    echo: Callable[[str], None] = _echo,
    progress: bool = True,
    begun: list | None = None,
    hold: bool = False,
) -> Any:
    """Run an archive on the connected Ray cluster; returns the
    :class:`deid.archive.ArchiveRun` (states, status table, summary). ``begun``: the
    run is appended to it once it holds the output folder (its lock), so a caller can
    tell a run that started from one refused at the start. ``hold``: keep the output
    folder's lock when the run returns (the caller evaluates the outputs and then calls
    ``run.release()``); a run that raises releases it in any case."""
    from deid.archive import ArchiveRun

    from .cluster import configure_data

    configure_data()
    run = ArchiveRun(manifest, cfg, out_dir, work_root=cfg.ray.work_dir or None, overwrite=overwrite, echo=echo)
    run.begin()
    if begun is not None:
        begun.append(run)
    ticker = _Ticker(run, cfg.ray.progress_every_s, echo, enabled=progress)
    models = None
    returned = False
    try:
        _plan_all(run, cfg, overwrite)
        waiting = {v for v, p in run.plans.items() if "swap" in p.todo}
        if waiting:
            from .train import SwapModels

            models = SwapModels(run, cfg, echo=echo)
            models.start()  # training runs in Ray tasks; the driver goes on
        _render_and_finalize(run, cfg, models, [v for v in run.plans if v not in waiting])
        while waiting:  # waves: the videos of the patients whose models are ready
            decided = models.wait() if models.pending else {run.plans[v].entry.patient for v in waiting}
            wave = {v for v in waiting if run.plans[v].entry.patient in decided}
            waiting -= wave
            _render_and_finalize(run, cfg, models, sorted(wave))
        returned = True
    finally:
        ticker.stop()
        try:
            if models is not None:
                models.cleanup()
        finally:
            run.finish(release=not (hold and returned))
    if progress:
        echo(run.progress.line())
    return run


def _plan_all(run: Any, cfg: Any, overwrite: bool) -> None:
    import ray

    from .stages import plan_task

    task = ray.remote(max_retries=cfg.ray.max_retries)(plan_task)
    cfg_dict = cfg.to_dict()
    by_video: dict[str, list[dict]] = {}
    for (v, _m), r in run.status.rows.items():
        by_video.setdefault(v, []).append(r)
    pending: dict[Any, Any] = {}
    for e in run.manifest.entries:
        if run.should_plan(e):
            pending[task.remote(e, cfg_dict, str(run.out_dir), str(run.work_root), by_video.get(e.video_id, []), overwrite)] = e
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=min(len(pending), 256), timeout=1.0)
        for ref in ready:
            e = pending.pop(ref)
            try:
                out = ray.get(ref)
            except Exception as ex:  # noqa: BLE001 - the task itself died for good
                out = {"plan": None, "error": f"{e.video}: planning failed ({type(ex).__name__}: {ex})", "kind": "internal"}
            if out["plan"] is None:
                run.accept_plan(e, None, _error(out["error"], out["kind"]))
            else:
                run.accept_plan(e, pickle.loads(out["plan"]))


def _fail_plan(run: Any, plan: Any, error: str, kind: str) -> None:
    from deid.archive import result_rows
    from deid.pipeline import VideoResult

    res = VideoResult(input=plan.entry.video, status="failed", error=error, error_kind=kind)
    run.accept_result(plan, res, result_rows(plan, res))


def render_pool(concurrency: int, n_rows: int) -> Any:
    """The render actor pool. All actors are asked for at once; the pool starts as soon as
    one is up, so CPUs held by swap training do not stall it (a fixed-size pool waits for
    every actor). One segment in flight per actor: a segment renders for seconds to
    minutes, so queueing a second one behind a busy actor (Ray Data's default is two)
    gains nothing and can leave it waiting there while another actor idles: with three
    whole videos on two actors the last video's wait decided the run's length
    (``deid.archive.render_order`` puts the longest first)."""
    import ray.data

    size = max(1, min(int(concurrency), int(n_rows)))
    return ray.data.ActorPoolStrategy(min_size=1, max_size=size, initial_size=size, max_tasks_in_flight_per_actor=1)


def _render_and_finalize(run: Any, cfg: Any, models: Any, vids: list[str]) -> None:
    """Render the segments of the videos ``vids`` on a Ray Data actor pool and finalize
    each video as soon as its last segment is in."""
    import ray
    import ray.data

    from deid.archive import SegmentOutcome, render_order

    from .stages import SegmentRenderer, fault_spec, finalize_task

    rows = []
    wanted: set[str] = set()
    for vid in render_order({v: run.plans[v] for v in vids}):  # the most work first
        plan = run.plans[vid]
        if not plan.todo:  # every method was dropped (e.g. the swap model could not be trained)
            # its status rows are written and its plan leaves run.plans: the wave's other
            # videos (another of the patient's videos with a method left) still render
            _fail_plan(run, plan, "; ".join(e for _, e, _ in plan.failed) or "nothing left to render", "error")
            if models is not None:
                models.video_finished(plan)
            continue
        blob = pickle.dumps(plan)
        rows += [{"video_id": vid, "segment": k, "plan": blob} for k in range(len(plan.segments))]
        wanted |= set(plan.todo)
    if not rows:
        return
    methods = sorted(wanted)
    ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), 4096))
    ds = ds.map_batches(
        SegmentRenderer,
        fn_constructor_kwargs={"cfg_dict": cfg.to_dict(), "methods": methods, "max_attempts": cfg.ray.max_retries + 1,
                               "fault_marker": fault_spec("render")},
        batch_size=cfg.ray.batch_size,
        compute=render_pool(cfg.ray.concurrency, len(rows)),
        num_cpus=cfg.ray.num_cpus_render,
        num_gpus=cfg.ray.num_gpus_detect or None,
    )
    fin = ray.remote(num_cpus=cfg.ray.num_cpus_finalize, max_retries=cfg.ray.max_retries)(finalize_task)
    cfg_dict = cfg.to_dict()
    inflight: dict[Any, Any] = {}

    def collect(block: bool) -> None:
        if not inflight:
            return
        ready, _ = ray.wait(list(inflight), num_returns=1 if block else len(inflight), timeout=None if block else 0)
        for ref in ready:
            plan = inflight.pop(ref)
            try:
                out = ray.get(ref)
            except Exception as ex:  # noqa: BLE001 - retries exhausted: the video fails, the run goes on
                _fail_plan(run, plan, f"{plan.entry.video}: finalizing failed ({type(ex).__name__}: {ex})", "internal")
            else:
                run.accept_result(plan, SimpleNamespace(status=out["state"], error=out["error"]), out["rows"])
            if models is not None:
                models.video_finished(plan)

    try:
        for row in ds.iter_rows():
            plan = run.accept_segment(SegmentOutcome.from_json(row["outcome"]))
            if plan is not None:
                outs = [o.to_json() for o in run.segment_outcomes(plan.entry.video_id)]
                inflight[fin.remote(pickle.dumps(plan), outs, cfg_dict, fault_spec("finalize"))] = plan
            collect(block=False)
    except Exception as ex:  # noqa: BLE001 - e.g. render actors that cannot start (a missing model)
        log.error("rendering stopped: %s", ex)
        msg = f"rendering stopped: {type(ex).__name__}: {str(ex).splitlines()[0] if str(ex) else ''}"
        while inflight:
            collect(block=True)
        for vid in vids:
            plan = run.plans.get(vid)
            if plan is None:  # published before the pool stopped
                continue
            _fail_plan(run, plan, f"{plan.entry.video}: {msg}", "internal")
            if models is not None:
                models.video_finished(plan)
        return
    while inflight:
        collect(block=True)


# ----------------------------------------------------------------------------- entry


def build_parser() -> argparse.ArgumentParser:
    from deid.commands.archive import __doc__ as doc
    from deid.commands.archive import add_arguments

    p = argparse.ArgumentParser(prog="python -m ray_jobs.deidentify", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    return p


def run_args(args: argparse.Namespace) -> int:
    """Run the job for parsed arguments (from :func:`main`)."""
    from deid.archive import load_manifest, parse_methods

    from .cluster import connect

    cfg = resolve_config(args)
    out_dir = Path(cfg.ray.out_dir).expanduser().resolve()
    manifest = load_manifest(
        cfg.ray.manifest,
        root=cfg.ray.archive_root or None,
        methods=parse_methods(cfg.ray.methods, ("blur",)),
        donor=cfg.swap.donor,
        out_dir=out_dir,
        exclude=[cfg.ray.work_dir] if cfg.ray.work_dir else [],
        container=cfg.io.container,
        output_names=cfg.io.output_names,
    )
    train = any("swap" in e.methods for e in manifest.entries)
    where, started = connect(cfg, local=getattr(args, "local", False), train=train)
    begun: list = []
    try:
        return _run_and_evaluate(args, cfg, manifest, out_dir, where, started, begun)
    finally:
        if begun:  # the output folder's lock, held through the evaluation and the report
            begun[0].release()


def _run_and_evaluate(args: argparse.Namespace, cfg: Any, manifest: Any, out_dir: Path, where: str, started: bool,
                      begun: list) -> int:
    """The run, its evaluation and report, all under the output folder's lock (the
    caller releases it): a second job of the folder accepted while this one evaluates
    would sweep the evaluation's scratch folder and could replace the outputs being
    evaluated."""
    echo = _echo
    show = not (getattr(args, "no_progress", False) or getattr(args, "json", False))
    eval_failed: dict[str, str] = {}
    try:
        run = run_archive(cfg, manifest, out_dir, overwrite=getattr(args, "overwrite", False), echo=echo, progress=show,
                          begun=begun, hold=True)
        metrics = None
        eval_error = ""
        if cfg.ray.evaluate:
            from .evaluate import evaluate_archive

            try:
                metrics = evaluate_archive(run, cfg, echo=echo, failures=eval_failed)
            except Exception as e:  # noqa: BLE001 - the outputs are published; say what failed
                log.exception("evaluation failed")
                eval_error = f"evaluation failed: {type(e).__name__}: {e}"
                echo(f"archive: {eval_error}")
    finally:
        if started:
            import ray

            ray.shutdown()
            if begun:
                # this machine's workers are gone: the temporaries of the videos they were
                # writing when the job was stopped go too (only this host's, and only those
                # whose writer no longer runs: a job refused at the start, because another
                # holds the folder, touches nothing; on a cluster the next run removes them)
                from deid.io import remove_stale_partials

                for d in begun[0].output_dirs():
                    remove_stale_partials(d, this_host_only=True)
    summary = run.summary()
    summary["ray"] = where
    if eval_error:
        summary["evaluation_error"] = eval_error
    if eval_failed:
        summary["evaluation_failed"] = dict(sorted(eval_failed.items()))
    if metrics is not None:
        summary["metrics_dir"] = str(metrics)
        html = _report(args, metrics, run.records_dir, echo)
        if html:
            summary["report"] = str(html)
    if getattr(args, "json", False):
        print(json.dumps(summary, indent=1, default=str))
    else:
        st = summary["states"]
        print(f"archive: {summary['videos']} video(s): " + ", ".join(f"{n} {s}" for s, n in sorted(st.items())) + f"; status table {summary['status_table']}")
        for vid, err in summary["failed"].items():
            print(f"  FAILED {vid}: {err}", file=sys.stderr)
        for vid, err in summary.get("evaluation_failed", {}).items():
            print(f"  EVALUATION FAILED {vid}: {err}", file=sys.stderr)
        if "metrics_dir" in summary:
            print(f"archive: metrics {summary['metrics_dir']}" + (f"; report {summary['report']}" if "report" in summary else ""))
        if cfg.io.output_names == "pseudonym":
            print(f"archive: before sharing {summary['out_dir']}: deid verify {summary['out_dir']}")
    return 0 if run.ok and not eval_error and not eval_failed else 1


def _report(args: argparse.Namespace, metrics: Path, records: Path, echo: Callable[[str], None]) -> Path | None:
    if getattr(args, "no_report", False):
        return None
    try:
        from deid.report import build_report
    except ImportError:
        echo("archive: deid.report is not available; no HTML report")
        return None
    target = Path(args.report) if getattr(args, "report", None) else records / "report.html"
    try:
        return Path(build_report(metrics, target))
    except Exception as e:  # noqa: BLE001 - the metrics are written; the report can be rebuilt with `deid report`
        log.exception("report failed")
        echo(f"archive: the HTML report failed ({type(e).__name__}: {e}); rebuild it with `deid report {metrics}`")
        return None


def main(argv: list[str] | None = None) -> int:
    """``python -m ray_jobs.deidentify ...``; returns the exit code (see the module doc)."""
    from deid.errors import DeidError

    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(getattr(args, "verbose", 0), 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    from deid._signals import sigterm_interrupts, terminated

    try:
        with sigterm_interrupts():  # `ray job stop`, a scheduler's stop: unwind as for Ctrl-C
            return run_args(args)
    except DeidError as e:
        print(f"archive: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # the file system said no (permissions, full, read-only): one line, rerun resumes
        log.debug("OSError", exc_info=True)
        where = f": {e.filename}" if e.filename else ""
        print(f"archive: error: {e.strerror or e}{where}; rerun the same command to resume once it is fixed", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        if terminated(e):
            print("archive: terminated (SIGTERM); rerun the same command to resume", file=sys.stderr)
            return 143
        print("archive: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
