"""Many videos in one process: models built once, one bad video never stops the batch,
progress bars per video and overall, a summary table at the end."""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from .config import Config
from .errors import DeidError, OutputWriteError
from .pipeline import (Components, PlannedInput, VideoResult, check_backends, plan_inputs, process_video, pseudonym, resolved,
                       sha256_file)

log = logging.getLogger(__name__)


def _probe_frames(paths: Sequence[Path]) -> dict[str, int]:
    """Frame count of each video as its header says (for the progress bars' totals); a
    video that cannot be probed is left out (its run says why)."""
    from .io import probe

    counts: dict[str, int] = {}
    for p in paths:
        try:
            counts[str(p)] = probe(p, scan=False).frame_count
        except DeidError:
            pass
    return counts


def _check_donor(cfg: Config) -> None:
    """The swap's donor is chosen, in the library and with a valid consent (ConsentError
    otherwise), as the real run checks it before training; its media are not read."""
    try:
        from .swap.donors import DonorLibrary
    except ImportError as e:
        raise DeidError(f"face swap is not available in this build ({e})") from None
    DonorLibrary(cfg.swap.donor_library or None).get(cfg.swap.donor, check=False).consent.check()


@contextlib.contextmanager
def _swap_session(video: Path, cfg: Config, out_dir: Path | None = None) -> Iterator[Any]:
    """Train the per-patient swap model for ``video``, yield its anonymizer, then delete
    the model (irreversibility). Provided by :mod:`deid.swap`."""
    try:
        from .swap.session import swap_session
    except ImportError as e:
        raise DeidError(f"face swap is not available in this build ({e})") from None
    # the patient's model must never land in the output folder (swap.workdir inside it is refused)
    with swap_session([video], cfg, forbid=[out_dir] if out_dir is not None else []) as anonymizer:
        yield anonymizer


def run_batch(
    inputs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    methods: Sequence[str],
    cfg: Config,
    *,
    overwrite: bool = False,
    dry_run: bool = False,
    progress: bool = True,
    evaluate: bool = False,
    components: Components | None = None,
    skip_existing: bool = False,
    records_dir: str | os.PathLike | None = None,
    on_result: Callable[[VideoResult, int, int], None] | None = None,
) -> list[VideoResult]:
    """De-identify ``inputs`` (files or folders) into ``out_dir``, one
    :class:`VideoResult` per video; a failed video does not stop the others.
    ``skip_existing``: leave out videos whose every output is already published from the
    same input bytes with the same configuration, and of the others every method so done
    (see :func:`done_methods`).
    ``evaluate``: evaluation tables in ``<records>/metrics``, the records folder being
    ``records_dir`` or :func:`deid.records.records_folder`'s default (the output folder;
    beside it under ``io.output_names: pseudonym``). ``on_result(result, i, n)`` is
    called as each video finishes (the i-th of n planned)."""
    from tqdm import tqdm

    from .records import make_records_folder, records_folder

    records = records_folder(out_dir, cfg.io.output_names, records_dir)  # a bad one is refused before any work
    if components is None:
        check_backends(cfg)  # by name, dry run or not: a typo is refused before any work, naming its key
    if dry_run and "swap" in methods:
        _check_donor(cfg)  # a real run refuses a missing donor or consent before training: so does a dry run

    planned = plan_inputs(inputs, exclude=[out_dir])
    paths = [p.path for p in planned]
    protected = frozenset(str(resolved(p)) for p in paths)  # no output may replace any input
    if not paths:
        raise DeidError(f"no video files found in {', '.join(map(str, inputs))}{_left_out_note(inputs, out_dir)}")
    out = Path(out_dir)
    if cfg.io.output_names != "pseudonym":
        planned = _reclaim_plain_names(planned, out)
    if out.exists() and not out.is_dir():
        raise DeidError(f"--out {out} is a file; give the folder the outputs go to")
    for above in out.absolute().parents:  # the first that exists must be a folder (a dry run says so too)
        if above.exists():
            if not above.is_dir():
                raise OutputWriteError(f"cannot create --out {out}: {above} is a file, not a folder")
            break
    made_out = not out.exists()  # created here: removed again if nothing was written in it
    if not dry_run:
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputWriteError(f"cannot create --out {out}: {e.strerror or e}") from None
        from .io import remove_stale_partials

        remove_stale_partials(out, recursive=True)  # outputs mirror folder inputs in sub-folders
    base_methods = [m for m in methods if m != "swap"]
    comp = components
    if comp is None and not dry_run:
        try:
            comp = Components.build(cfg, base_methods)
        except BaseException:  # a model that cannot be loaded: nothing was written either
            if made_out:
                _remove_if_empty(out)
            raise
    results: list[VideoResult] = []
    show = progress and sys.stderr.isatty()
    frames = _probe_frames(paths) if show else {}
    overall = tqdm(total=sum(frames.values()), unit="frame", desc="all videos", position=0, disable=not show, leave=True)
    pseudo = cfg.io.output_names == "pseudonym"
    named: dict[str, Path] = {}  # pseudonym -> the input it was given to

    def _add(r: VideoResult) -> None:
        results.append(r)
        if on_result is not None:
            on_result(r, len(results), len(planned))

    try:
        for item in planned:
            p, vout = item.path, out / item.subdir
            digest = None
            if pseudo:  # named after the content, all in --out (folder names may identify too)
                try:
                    digest = sha256_file(p)
                except OSError as e:
                    _add(VideoResult(input=str(p), status="failed", error=f"{p}: cannot read ({e.strerror or e})",
                                     error_kind="invalid_input"))
                    continue
                item, vout = PlannedInput(p, Path("."), pseudonym(digest)), out
                if item.name in named:
                    _add(VideoResult(input=str(p), status="skipped",
                                     error=f"the same bytes as {named[item.name]}, whose outputs are {item.name}.*"))
                    continue
                named[item.name] = p
            todo = list(methods)
            if skip_existing:  # a dry run says what a real one would skip
                if digest is None:  # once for the check and the run (the audit record carries it)
                    with contextlib.suppress(OSError):  # unreadable: the run says so
                        digest = sha256_file(p)
                done = done_methods(p, vout, methods, cfg, item.name, digest)
                if len(done) == len(methods):
                    _add(VideoResult(input=str(p), status="skipped", error=SKIPPED_DONE))
                    continue
                todo = [m for m in methods if m not in done]  # a method added since: only it is rendered
            bar = tqdm(desc=p.name[:30], total=frames.get(str(p)), unit="frame", position=1, leave=False, disable=not show)

            def tick(n: int, _bar=bar) -> None:
                _bar.update(n)
                overall.update(n)

            try:
                # a swap trains for minutes on the patient's faces: an output that cannot be
                # written (exists without --overwrite, would replace an input, unreadable
                # video) is refused first, as a dry run would, not after the training
                refused, trained = None, False
                if "swap" in todo and not dry_run:
                    pre = process_video(p, vout, todo, cfg, components=comp, overwrite=overwrite, dry_run=True,
                                        name=item.name, protect=protected, input_sha256=digest)
                    refused = pre if pre.status == "failed" else None
                if refused is not None:
                    r = refused
                elif "swap" in todo and not dry_run:
                    t_train = time.perf_counter()
                    with _swap_session(p, cfg, out) as swap_anon:
                        trained = True
                        t_train = time.perf_counter() - t_train
                        comp_v = comp.with_anonymizer("swap", swap_anon)
                        r = process_video(p, vout, todo, cfg, components=comp_v, overwrite=overwrite, progress=tick,
                                          name=item.name, protect=protected, input_sha256=digest)
                    # the patient's model is part of this video's cost (the summary's seconds)
                    r.timings["swap_training"] = round(t_train, 4)
                    r.timings["total"] = r.timings.get("total", 0.0) + t_train
                else:
                    r = process_video(p, vout, todo, cfg, components=comp, overwrite=overwrite, dry_run=dry_run,
                                      progress=tick, name=item.name, protect=protected, input_sha256=digest)
            except DeidError as e:
                others = [m for m in todo if m != "swap"]
                if "swap" in todo and others and not dry_run and refused is None and not trained:
                    # the patient's model could not be trained (too few usable faces, the
                    # donor is the patient, ...): the video's other methods do not need it
                    # and are rendered; the swap is this video's failed method (exit 1)
                    r = _without_swap(p, vout, others, cfg, comp, e, overwrite=overwrite, progress=tick,
                                      name=item.name, protect=protected, input_sha256=digest)
                else:
                    r = VideoResult(input=str(p), status="failed", error=str(e), error_kind=e.kind)
            bar.close()
            if todo != list(methods):
                r.skipped_methods = [m for m in methods if m not in todo]
                if r.status == "failed" and not dry_run:
                    # the methods added since failed; the outputs done before are still there
                    # (and evaluated): the failure is the new methods', not the whole video's
                    err = {"error": r.error, "kind": r.error_kind}
                    r = VideoResult(input=r.input, status="done", info=r.info, frames_read=r.frames_read, timings=r.timings,
                                    skipped_methods=r.skipped_methods,
                                    failed_methods={**{m: err for m in todo}, **r.failed_methods})
            if evaluate and not dry_run and r.status in ("done", "partial", "failed"):
                # the output name (sub-folder and collision-free name) tells videos apart in
                # the tables; two inputs called clip.mp4 must not share rows. Every method
                # asked for is evaluated, those done before (--skip-existing) too: the
                # video's evaluation lists its outputs, and one left out would drop its rows
                from .pipeline import output_path

                metrics = make_records_folder(records, cfg.io.output_names) / "metrics"
                from .evaluate.store import table_video_id

                vid = table_video_id((item.subdir / (item.name or p.stem)).as_posix())
                # a video refused (the leak audit) or failed has no output to evaluate: its
                # failure goes in the status table the report reads, so the report counts it
                # rather than describing the other videos as the whole run; a video that
                # succeeds now loses its earlier failure rows
                _record_failures(r, metrics, vid, hide_input=pseudo)
                if r.status != "failed":
                    outputs = {o.method: o.path for o in r.outputs}
                    outputs.update({m: str(output_path(p, vout, m, cfg.io.container, item.name or None))
                                    for m in r.skipped_methods})
                    _evaluate(r, outputs, cfg, metrics, vid)
            _add(r)
    finally:
        overall.close()
        if made_out and not dry_run:
            _remove_if_empty(out)
    return results


def _remove_if_empty(folder: Path) -> None:
    """``folder`` and its sub-folders, where they hold nothing (a batch whose every video
    failed leaves no empty --out behind that looks like a finished, empty result)."""
    if not folder.is_dir() or folder.is_symlink():
        return
    for d in sorted((p for p in folder.rglob("*") if p.is_dir() and not p.is_symlink()), key=lambda p: -len(p.parts)):
        with contextlib.suppress(OSError):
            d.rmdir()  # only an empty one goes
    with contextlib.suppress(OSError):
        folder.rmdir()


def _without_swap(p: Path, vout: Path, others: Sequence[str], cfg: Config, comp: Any, err: DeidError,
                  **kw: Any) -> VideoResult:
    """``others`` rendered for a video whose swap model failed to train (``err``), with the
    swap recorded as its failed method; rendering failing too fails the whole video."""
    swap = {"error": str(err), "kind": err.kind}
    try:
        r = process_video(p, vout, list(others), cfg, components=comp, **kw)
    except DeidError as e:
        return VideoResult(input=str(p), status="failed", error_kind=e.kind,
                           error=f"{e} (and the swap's training failed: {err})")
    if r.status == "failed":
        r.error = f"{r.error} (and the swap's training failed: {err})"
    else:
        r.failed_methods["swap"] = swap
    return r


def _left_out_note(inputs: Sequence[str | os.PathLike], out_dir: str | os.PathLike) -> str:
    """Why a folder that holds videos gave none: they are inside the output folder, which
    is never read as input (outputs would be de-identified again)."""
    found = [p for p in plan_inputs(inputs) if p.path.exists()]
    if not found:
        return ""
    return (f" ({len(found)} video file(s) there are inside the output folder {out_dir}, which is never read as input; "
            "give an --out outside the input folder)")


def _record_failures(r: VideoResult, metrics: Path, video_id: str, hide_input: bool = False) -> None:
    """``r``'s failed rows in the evaluation's status table (none when it succeeded, which
    clears the video's earlier failures), as the archive does (store.write_failures);
    the tables are re-aggregated when this changed them.
    A failure to write them is logged: the run's own result already says the video failed.
    ``hide_input`` (io.output_names=pseudonym): the rows and their error name the video
    by its pseudonym, not its path, as its audit records do, so the report shows none."""
    try:
        from .audit import hide_input_in
        from .evaluate.store import PARTS, _partition_dir, aggregate, write_failures
        from .metrics.schemas import status_rows

        vdir = _partition_dir(metrics / PARTS, "status", video_id)
        before = set(vdir.glob("method=*")) if vdir.is_dir() else set()
        rows = status_rows(r, video=video_id) if r.status == "failed" else []
        for m, f in r.failed_methods.items():  # a method that failed while the others were written
            failed = VideoResult(input=r.input, status="failed", error=f["error"], error_kind=f["kind"],
                                 frames_read=r.frames_read, timings=r.timings)
            rows += [{**row, "method": m} for row in status_rows(failed, video=video_id)]
        if hide_input:
            for row in rows:
                row["input_path"] = None
                row["error"] = hide_input_in(row["error"], r.input)
        write_failures(metrics, video_id, rows)
        if rows or any(not d.exists() for d in before):  # failures written or cleared
            aggregate(metrics)
    except ImportError as e:
        log.warning("evaluation not available: %s", e)
    except (DeidError, OSError) as e:
        log.error("%s: could not record its failure in %s: %s", r.input, metrics, e)


def _evaluate(r: VideoResult, outputs: dict[str, str], cfg: Config, metrics: Path, video_id: str) -> None:
    """Evaluate one video's outputs; a failure is this video's (``r.evaluation_error``),
    and the batch goes on."""
    try:
        from .evaluate import evaluate_outputs
    except ImportError as e:
        log.warning("evaluation not available: %s", e)
        return
    try:
        res = evaluate_outputs(r.input, outputs, metrics, cfg, video_id=video_id)
    except Exception as e:  # noqa: BLE001 - one video's evaluation must never stop the batch (nor lose its result)
        if isinstance(e, DeidError):
            r.evaluation_error = str(e)
        elif isinstance(e, OSError):
            r.evaluation_error = f"{e.strerror or e}: {e.filename or ''}".rstrip(": ")
        else:
            log.debug("evaluation of %s", r.input, exc_info=True)
            r.evaluation_error = f"unexpected {type(e).__name__}: {e}"
        log.error("%s: evaluation failed: %s", r.input, r.evaluation_error)
        return
    refused = (res or {}).get("errors") or {}
    if refused:
        r.evaluation_error = "; ".join(f"{m} not evaluated: {msg}" for m, msg in refused.items())


SKIPPED_DONE = "already done with this input and configuration (--skip-existing)"


def done_methods(video: Path, out_dir: Path, methods: Sequence[str], cfg: Config, name: str = "", digest: str | None = None) -> list[str]:
    """The methods of ``methods`` whose run of ``video`` into ``out_dir`` is already done:
    the output exists beside an audit record that says it was published (done or
    partial) from an input with this file's sha256, under this configuration's hash or
    one that shapes this method's output the same (:func:`deid.archive.same_method_config`: adding
    ``swap --donor X`` to a folder rendered with blur does not make blur "not done")."""
    from .archive import same_method_config
    from .config import config_hash
    from .pipeline import output_path, read_record, record_proves

    chash = config_hash(cfg)
    done = []
    for m in methods:
        o = output_path(video, out_dir, m, cfg.io.container, name or None)
        rec = read_record(o) if o.is_file() else None
        if rec is None:  # none, or not ours
            continue
        if rec.get("config_hash") != chash and not same_method_config(rec, cfg, m):  # another configuration
            continue
        try:
            digest = digest or sha256_file(video)
        except OSError:  # an unreadable input is not "done": the run says what is wrong
            continue
        if record_proves(rec, o, digest):  # not an old video beside a new record
            done.append(m)
    return done


def _reclaim_plain_names(planned: Sequence[PlannedInput], out: Path) -> list[PlannedInput]:
    """Inputs that share a name (``visit.mov`` and ``visit.mp4``) are told apart by a hash
    of their path (:func:`deid.pipeline.plan_inputs`); one of them whose outputs already
    carry the plain name (from a run before the other was added: an audit record of that
    name says it was made from these bytes) keeps it, so a rerun finds them
    (``--skip-existing``) rather than writing the same video again under a second name."""
    taken: set[tuple[str, str]] = set()
    result = []
    for item in planned:
        plain = item.path.stem
        key = (str(item.subdir), plain)
        folder = out / item.subdir
        if item.name != plain and key not in taken and folder.is_dir():
            mine: str | None = None  # the input's sha256, read once
            # any method's record of the plain name (blur done before, mask asked now)
            for a in sorted(folder.glob(f"{glob.escape(plain)}.*.audit.json")):
                if a.name.count(".") != plain.count(".") + 3:  # <plain>.<method>.audit.json, not a longer stem's
                    continue
                try:
                    want = (json.loads(a.read_text(encoding="utf-8")).get("input") or {}).get("sha256")
                    if want and mine is None:
                        mine = sha256_file(item.path)
                    same = bool(want) and mine == want  # the bytes, not a path that may be relative
                except (OSError, ValueError, AttributeError):
                    same = False
                if same:
                    taken.add(key)
                    item = PlannedInput(item.path, item.subdir, plain)
                    break
        result.append(item)
    return result


def summary_table(results: Sequence[VideoResult]) -> str:
    """Plain-text table: one row per (video, method)."""
    rows = [("input", "method", "status", "frames", "fail-closed", "leaks", "seconds", "output / error")]
    for r in results:
        secs = f"{r.timings.get('total', 0):.1f}"
        per_method = bool(r.skipped_methods or r.failed_methods)
        if not r.outputs and (r.status == "failed" or not per_method):  # (also a dry run's refusal of a method added since)
            rows.append((Path(r.input).name, "-", r.status, str(r.frames_read or "-"), "-", "-", secs, r.error))
            if not per_method:
                continue
        for o in r.outputs:
            leaks = str(o.leak.get("leaks", "-")) if o.leak else "-"
            fc = str(r.counts.get("frames_fail_closed", "-")) if r.counts else "-"
            # a video that failed after rendering (e.g. while publishing) has no output to show
            frames = o.frames_written or r.frames_read
            if r.status == "planned":  # nothing read yet: the frames the input holds
                frames = r.info.frame_count if r.info else 0
            rows.append((Path(r.input).name, o.method, r.status, str(frames), fc, leaks, secs,
                         r.error if r.status == "failed" else o.path))
        for m in r.skipped_methods:
            rows.append((Path(r.input).name, m, "skipped", "-", "-", "-", "-", SKIPPED_DONE))
        for m, f in r.failed_methods.items():
            rows.append((Path(r.input).name, m, "failed", "-", "-", "-", "-", f["error"]))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for k, row in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[-1])
        if k == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 14)
    n_plan = sum(r.status == "planned" for r in results)
    if n_plan:
        lines.append(f"dry run: {n_plan} video(s) would be de-identified (beside each output its <name>.audit.json and "
                     f"<name>.frames.parquet); nothing was written" + (f"; {len(results) - n_plan} would fail or be skipped"
                                                                        if n_plan < len(results) else ""))
        return "\n".join(lines)
    n_ok = sum(r.ok for r in results)
    n_some = sum(bool(r.failed_methods) and r.status in ("done", "partial") for r in results)
    n_skip = sum(r.status == "skipped" and r.error.startswith("already done") for r in results)
    n_same = sum(r.status == "skipped" for r in results) - n_skip
    why = [f"{n_skip} skipped: already done"] * bool(n_skip) + [f"{n_same} skipped: the same bytes as another input"] * bool(n_same)
    lines.append(f"{n_ok} of {len(results)} video(s) succeeded" + (f" ({'; '.join(why)})" if why else "")
                 + ("" if n_ok + n_some == len(results) else f"; {len(results) - n_ok - n_some} failed")
                 + (f"; {n_some} with a method failed (its other outputs written)" if n_some else ""))
    return "\n".join(lines)
