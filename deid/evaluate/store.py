"""The METRICS_DIR: where an evaluation's tables go, and :func:`aggregate`.

Layout (shared with the Ray evaluation stage and ``deid report``)::

    run.json               what was evaluated, with which models and config   (aggregate)
    summary.parquet        one row per (video, method)           "summary"    (aggregate)
    status.parquet         one row per (video, method) audit     "status"     (aggregate)
    per_keypoint.parquet   (video, method, keypoint)             "per_keypoint" (aggregate)
    clinical.parquet       (video, method, feature)              "clinical"   (aggregate)
    keypoints/ identity/ perframe/   video=/method= partitions  (written per video)
    parts/                 per-video pieces aggregate() reads:
        summary/ per_keypoint/ clinical/ status/   video=/method= partitions
        videos/<video>.json                        run.json's entry for that video

Why the ``parts/`` indirection: videos of an archive are evaluated independently (one
after another, or by many Ray tasks at once). Each writes only its own partitions, so
writers never touch the same file and re-evaluating one video replaces only its rows.
The single-file tables and ``run.json`` are *derived*: :func:`aggregate` rebuilds them
from ``parts/`` whenever asked (after each video, at the end of an archive run, or on a
partial run), and can be re-run any time.

Embeddings are never written: the identity table holds distances and boxes only, so a
METRICS_DIR carries no biometric template of the patient.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
import urllib.parse
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import InvalidInputError

log = logging.getLogger(__name__)

RUN_SCHEMA_VERSION = "1"
PARTS = "parts"
PARTITIONED = ("keypoints", "identity", "perframe")
AGGREGATED = {"summary": "summary.parquet", "status": "status.parquet", "per_keypoint": "per_keypoint.parquet",
              "clinical": "clinical.parquet"}


_MAX_ID_BYTES = 180  # of a partition folder's quoted name; a file name holds 255 bytes


def table_video_id(video: str) -> str:
    """``video`` as the tables can hold it: unchanged while its percent-encoded form
    (the partition folders' and run.json entries' names) fits a file name with room to
    spare; else a prefix of it and a hash of the whole, so a deep folder path or a long
    non-ASCII name (each byte of which encodes to three) is still evaluated, under an id
    that is still unique and still reads like the video's."""
    video = str(video)
    if len(urllib.parse.quote(video, safe="")) <= _MAX_ID_BYTES:
        return video
    tag = "~" + hashlib.sha256(video.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    room, head = _MAX_ID_BYTES - len(tag), ""
    for ch in video:
        if len(urllib.parse.quote(head + ch, safe="")) > room:
            break
        head += ch
    return head + tag


def video_entry_path(root: str | os.PathLike, video: str) -> Path:
    """Where one video's run.json entry is kept (``parts/videos/<url-quoted id>.json``)."""
    return Path(root) / PARTS / "videos" / (urllib.parse.quote(str(video), safe="") + ".json")


_video_file = video_entry_path  # older name


def _write_rows(data: Any, root: Path, kind: str) -> None:
    from ..metrics.schemas import to_table, write_dataset

    table = to_table(data, kind)
    if table.num_rows:
        write_dataset(table, root, kind)


_SCORE_TABLES = ("keypoints", "identity", "perframe", f"{PARTS}/summary", f"{PARTS}/per_keypoint", f"{PARTS}/clinical")


def _partition_dir(root: Path, kind: str, video: str, method: str | None = None) -> Path:
    """A (video[, method]) partition folder of a table, named as pyarrow's hive
    partitioning names it (values percent-encoded: ``a/clip`` -> ``video=a%2Fclip``)."""
    import urllib.parse

    d = root / kind / f"video={urllib.parse.quote(str(video), safe='')}"
    return d if method is None else d / f"method={urllib.parse.quote(str(method), safe='')}"


def clear_method_scores(metrics_dir: str | os.PathLike, video: str, method: str | None = None) -> int:
    """Delete one (video, method)'s partitions (every method's when ``method`` is None)
    from every score table, so that a re-evaluation that writes fewer tables (no
    keypoints, no clinical rows) or fails leaves none of the previous evaluation's rows
    behind. Touches only that video's folders (other videos may be written meanwhile).
    Returns the partitions removed."""
    import shutil

    root, n = Path(metrics_dir), 0
    for kind in _SCORE_TABLES:
        d = _partition_dir(root, kind, video, method)
        if d.is_dir():
            shutil.rmtree(d, ignore_errors=True)
            n += 1
    return n


def write_method_scores(metrics_dir: str | os.PathLike, scores: Any) -> None:
    """Write one (video, method)'s rows (:class:`deid.evaluate.score.MethodScores`):
    its partitions of keypoints/, identity/, perframe/ and its parts/ rows, replacing
    every earlier partition of that (video, method)."""
    root = Path(metrics_dir)
    clear_method_scores(root, scores.video, scores.method)
    if scores.keypoints is not None:
        _write_rows(scores.keypoints, root / "keypoints", "keypoints")
    if scores.identity:
        _write_rows(scores.identity, root / "identity", "identity")
    _write_rows(scores.perframe, root / "perframe", "perframe")
    _write_rows([scores.summary], root / PARTS / "summary", "summary")
    if scores.per_keypoint:
        _write_rows(scores.per_keypoint, root / PARTS / "per_keypoint", "per_keypoint")
    if scores.clinical:
        _write_rows(scores.clinical, root / PARTS / "clinical", "clinical")


def write_status(metrics_dir: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    if rows:
        _write_rows(rows, Path(metrics_dir) / PARTS / "status", "status")


def write_video_entry(metrics_dir: str | os.PathLike, entry: Mapping[str, Any]) -> Path:
    """run.json's entry for one video, plus the run-level facts of that evaluation
    (``config``, ``pose_backend``, ``identity_backend``) under ``"run"``."""
    from ..io import write_text_atomic

    if not entry.get("video"):
        raise InvalidInputError("write_video_entry: the entry needs a 'video' id")
    p = _video_file(Path(metrics_dir), str(entry["video"]))
    p.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(p, json.dumps(jsonable(entry), indent=2, allow_nan=False))


def jsonable(x: Any) -> Any:
    """Plain JSON data: NaN / inf become null (strict JSON has no NaN), numpy scalars
    become Python numbers, paths and other objects become strings."""
    import math

    import numpy as np

    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (bool, np.bool_)):
        return bool(x)
    if isinstance(x, (int, np.integer)):
        return int(x)
    if isinstance(x, (float, np.floating)):
        return float(x) if math.isfinite(float(x)) else None
    if x is None or isinstance(x, str):
        return x
    return str(x)


# ----------------------------------------------------------------------------- audits -> status


def audit_path_for(processed: str | os.PathLike) -> Path:
    """``clip.blur.mp4`` -> ``clip.blur.audit.json`` (the pipeline's naming)."""
    p = Path(processed)
    return p.with_name(p.name.rsplit(".", 1)[0] + ".audit.json")


def status_rows_from_audit(video: str, method: str, audit: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Status rows for one output from its audit record (``deid.audit.build_audit_record``)."""
    from types import SimpleNamespace

    from ..metrics.schemas import status_rows

    inp = audit.get("input") or {}
    out = audit.get("output") or {}
    result = SimpleNamespace(
        input=inp.get("path", ""), status=audit.get("status", "done"), error=audit.get("error", ""),
        error_kind=audit.get("error_kind", ""), frames_read=audit.get("frames_read", 0),
        counts=audit.get("counts") or {}, timings=audit.get("timings_s") or {},
        outputs=[SimpleNamespace(method=audit.get("method") or method, frames_written=out.get("frames_written", 0),
                                 leak=audit.get("leak_audit") or {})],
    )
    rows = status_rows(result, video=video, input_sha256=inp.get("sha256", "") or "",
                       config_hash=audit.get("config_hash", "") or "", deid_version=audit.get("deid_version", "") or "",
                       created_unix=audit.get("created_unix"))
    for r in rows:
        r["method"] = method
    return rows


def write_status_from_audits(metrics_dir: str | os.PathLike, video: str, processed: Mapping[str, Any]) -> dict[str, str | None]:
    """Write ``video``'s status rows from the audit record beside each processed output
    (``processed``: method -> output path); returns method -> audit path (None where the
    output has no readable record)."""
    audits: dict[str, str | None] = {}
    rows: list[dict[str, Any]] = []
    for m, p in processed.items():
        ap = audit_path_for(p)
        rec = read_audit(ap)
        audits[m] = str(ap) if rec is not None else None
        if rec is not None:
            rows += status_rows_from_audit(video, m, rec)
    write_status(metrics_dir, rows)
    return audits


def write_failures(metrics_dir: str | os.PathLike, video: str, rows: Sequence[Mapping[str, Any]]) -> None:
    """An archive's failed rows of ``video`` (its status table's, state ``failed``) in
    the status table the report reads, so a video that never produced an output is in
    the report's status section and verdict, not left out. The video's earlier failures
    that are not failures now (fixed since, or no longer asked for) are removed, so they
    do not stay failed there."""
    import shutil

    import pyarrow.parquet as pq

    from ..metrics.schemas import schema

    names = set(schema("status").names)
    keep = [{k: v for k, v in r.items() if k in names} for r in rows if r.get("state") == "failed"]
    # the video's failures from before that are not failures now (fixed, or no longer asked for)
    now = {str(r.get("method") or "") for r in keep}
    vdir = _partition_dir(Path(metrics_dir) / PARTS, "status", video)
    for d in sorted(vdir.glob("method=*")) if vdir.is_dir() else []:
        method = urllib.parse.unquote(d.name[len("method="):])
        if method in now:
            continue
        try:
            states = set(pq.read_table(d, columns=["state"]).column("state").to_pylist())
        except Exception:  # noqa: BLE001 - an unreadable part is rewritten by the next evaluation anyway
            continue
        if states == {"failed"}:
            shutil.rmtree(d, ignore_errors=True)
    write_status(metrics_dir, keep)


def read_audit(path: str | os.PathLike) -> dict[str, Any] | None:
    p = Path(path)
    if not p.is_file():
        return None
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        log.warning("%s: unreadable audit record (%s); no status row for it", p, e)
        return None
    return data if isinstance(data, dict) else None


# ----------------------------------------------------------------------------- aggregate


def _read_parts(root: Path, kind: str):
    from ..metrics.schemas import read_table, schema

    d = root / PARTS / kind
    if not d.is_dir() or not any(f for f in d.rglob("*.parquet") if not f.name.startswith(".")):
        return schema(kind).empty_table()
    return read_table(d, kind)


def _keep(table, entries: Mapping[str, Mapping[str, Any]]):
    """Drop partitions of methods a video's latest evaluation no longer has (a video
    re-evaluated with fewer outputs), keeping videos that have no entry, and an
    archive's failed rows (:func:`write_failures`: a method that failed has no output to
    evaluate, so it is never in the entry)."""
    import pyarrow as pa

    if table.num_rows == 0 or not entries:
        return table
    vids = table.column("video").to_pylist()
    meths = table.column("method").to_pylist()
    states = table.column("state").to_pylist() if "state" in table.column_names else [None] * table.num_rows
    mask = []
    for v, m, st in zip(vids, meths, states):
        e = entries.get(v)
        mask.append(e is None or m in ("original", "") or m in (e.get("processed") or {}) or st == "failed")
    return table.filter(pa.array(mask))


def load_entries(metrics_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The per-video entries (video id -> entry), in file-name order."""
    d = Path(metrics_dir) / PARTS / "videos"
    out: dict[str, dict[str, Any]] = {}
    if not d.is_dir():
        return out
    for f in sorted(d.glob("*.json")):
        if f.name.startswith("."):
            continue
        try:
            e = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError) as err:
            log.warning("%s: unreadable video entry (%s); skipped", f, err)
            continue
        if isinstance(e, dict) and e.get("video"):
            out[str(e["video"])] = e
    return out


def aggregate(metrics_dir: str | os.PathLike) -> dict[str, Any]:
    """(Re)build ``summary.parquet``, ``status.parquet``, ``per_keypoint.parquet``,
    ``clinical.parquet`` and ``run.json`` from the per-video pieces under ``parts/``.
    Returns the run.json dict. Safe to run any time (a partial archive run aggregates
    what is there); every file is replaced atomically."""
    from .. import __version__
    from ..io import write_text_atomic
    from ..metrics.schemas import write_table

    root = Path(metrics_dir)
    if not root.is_dir():
        raise InvalidInputError(f"{root}: no such metrics directory; run `deid evaluate --out {root}` first")
    entries = load_entries(root)
    tables = {}
    for kind, name in AGGREGATED.items():
        t = _keep(_read_parts(root, kind), entries)
        sort = [("video", "ascending"), ("method", "ascending")]
        if kind == "per_keypoint":
            sort.append(("keypoint", "ascending"))
        if t.num_rows:
            t = t.sort_by(sort)
        tables[kind] = t
        if t.num_rows or (root / name).exists():
            write_table(t, root / name, kind)
    latest = max(entries.values(), key=lambda e: e.get("created_utc", ""), default={})
    run_level = latest.get("run") or {}
    backends = {json.dumps([(e.get("run") or {}).get("pose_backend"), (e.get("run") or {}).get("identity_backend")],
                           sort_keys=True, default=str) for e in entries.values()}
    videos = []
    for e in entries.values():
        videos.append({k: v for k, v in e.items() if k != "run"})
    run = {
        "schema_version": RUN_SCHEMA_VERSION,
        "deid_version": __version__,
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "config": run_level.get("config"),
        "pose_backend": run_level.get("pose_backend"),
        "identity_backend": run_level.get("identity_backend"),
        "mixed_backends": len(backends) > 1,
        "videos": videos,
    }
    if len(backends) > 1:
        log.warning("%s: videos were evaluated with different pose / identity backends; their numbers are not comparable", root)
    write_text_atomic(root / "run.json", json.dumps(jsonable(run), indent=2, allow_nan=False))
    return run


def summary_frame(metrics_dir: str | os.PathLike, videos: Iterable[str] | None = None):
    """summary.parquet as a DataFrame (optionally only some videos)."""
    from ..metrics.schemas import read_table

    df = read_table(Path(metrics_dir) / AGGREGATED["summary"], "summary").to_pandas()
    if videos is not None:
        df = df[df["video"].isin(list(videos))]
    return df.reset_index(drop=True)
