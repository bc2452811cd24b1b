"""Versioned Parquet tables the evaluation writes and the report reads.

Four tables, each a :class:`pyarrow.Schema` whose metadata names the table
(``deid.table``) and its version (``deid.schema_version`` = :data:`SCHEMA_VERSION`);
both travel inside every Parquet file, so a reader can tell what it holds without the
code that wrote it:

- ``keypoints``: one row per (video, method, frame, person, keypoint); long format so
  any keypoint schema fits and DuckDB / pandas can filter by keypoint directly.
- ``identity``: one row per (video, method, frame, face) of the processed video, or one
  ``face = -1`` / ``found = false`` row for a frame where no face was found
  (:func:`deid.metrics.identity.identity_rows`).
- ``summary``: one row per (video, method): AP per region group, leak counts, the
  re-identification attack, clinical feature errors, and which pose / identity backend
  measured them (numbers from different backends are not comparable).
- ``status``: one row per (video, method) run: input hash, config hash, state, error,
  frame and face counts, fail-closed frames, timings — the audit trail of an archive run.

Schema 1.1 added three tables written by ``deid evaluate`` (:data:`EVALUATION_TABLES`)
and nullable summary columns (same-place identity check, patient reference counts):

- ``perframe``: one row per (video, method, frame): OKS per region group, persons
  found, identity distances in that frame (the time series behind the summary);
- ``per_keypoint``: one row per (video, method, keypoint): mean normalised error and
  missing rate (which keypoints a method destroys);
- ``clinical``: one row per (video, method, clinical feature): value on the processed
  video, value on the original, and the error between them.

Version rule: the major number changes when a column is removed, renamed or changes
type (readers refuse other majors); the minor number when nullable columns are added
(readers accept any minor and fill missing nullable columns with nulls).

Writers validate (unknown columns and missing required columns are errors, types are
cast safely) and publish atomically. :func:`write_dataset` partitions by video and
method (hive layout ``video=<id>/method=<name>/part-0.parquet``, values URL-encoded),
replacing the partitions it writes, so re-evaluating one video never touches others.

Reading: :func:`read_table` (validated, typed). pandas reads a file or a dataset
directory as-is (``pd.read_parquet``; partition columns come back as categoricals), and
so does DuckDB: ``read_parquet('root/**/*.parquet', hive_partitioning = true)``; add
``hive_types = {'video': 'VARCHAR'}`` when video ids look like numbers ("001"), which
DuckDB and pandas would otherwise read as integers. NaN is stored as null.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pyarrow as pa

from ..errors import InvalidInputError
from .clinical import FEATURE_NAMES

SCHEMA_VERSION = "1.3"  # 1.1: perframe, per_keypoint, clinical tables; summary same-place columns; 1.2: status.output_path;
# 1.3: summary.same_place_faces_too_small
META_TABLE = b"deid.table"
META_VERSION = b"deid.schema_version"
PARTITION_BY = ("video", "method")


def _f(name: str, typ: pa.DataType, nullable: bool = True, doc: str = "") -> pa.Field:
    return pa.field(name, typ, nullable=nullable, metadata={b"doc": doc.encode()} if doc else None)


_KEY = [
    _f("video", pa.string(), False, "video id (file stem or archive id)"),
    _f("method", pa.string(), False, "original | blur | pixelate | mask | swap"),
]

KEYPOINTS = [
    *_KEY,
    _f("frame", pa.int32(), False, "0-based frame index"),
    _f("person", pa.int16(), False, "person index within the frame (backend order)"),
    _f("keypoint", pa.int16(), False, "index in the keypoint schema (wholebody133)"),
    _f("x", pa.float32(), True, "pixels in the upright frame"),
    _f("y", pa.float32(), True, "pixels in the upright frame"),
    _f("score", pa.float32(), False, "confidence; 0 = not found"),
    _f("pose_backend", pa.string(), True, "registry name of the pose estimator"),
]

IDENTITY = [
    *_KEY,
    _f("frame", pa.int32(), False),
    _f("face", pa.int16(), False, "face index in the frame; -1 = no face found in this frame"),
    _f("found", pa.bool_(), False, "a face was found in the processed frame"),
    _f("x1", pa.float32()),
    _f("y1", pa.float32()),
    _f("x2", pa.float32()),
    _f("y2", pa.float32()),
    _f("embedded", pa.bool_(), True, "the identity model could embed this face"),
    _f("orig_faces", pa.int16(), True, "faces in the original frame"),
    _f("iou_original", pa.float32(), True, "IoU with the nearest original face box"),
    _f("dist_original", pa.float32(), True, "distance to the original face at the same place"),
    _f("dist_patient", pa.float32(), True, "min distance to the patient's reference embeddings"),
    _f("dist_target", pa.float32(), True, "min distance to the target / donor embeddings"),
    _f("match_original", pa.bool_(), True),
    _f("match_patient", pa.bool_(), True),
    _f("match_target", pa.bool_(), True),
    _f("leak", pa.bool_(), True, "match_original or match_patient"),
]

_AP_GROUPS = ("overall", "body", "head", "face", "hands", "feet")
SUMMARY = [
    *_KEY,
    _f("pose_backend", pa.string(), True),
    _f("identity_backend", pa.string(), True),
    _f("identity_threshold", pa.float64(), True),
    _f("frames", pa.int32(), True, "frames evaluated"),
    *[_f(f"ap_{g}", pa.float64(), True, f"COCO keypoint AP@[.5:.95], {g} group; NaN = no ground truth") for g in _AP_GROUPS],
    _f("ap50_overall", pa.float64()),
    _f("ap75_overall", pa.float64()),
    _f("oks_mean", pa.float64(), True, "mean per-frame OKS (overall group)"),
    _f("frames_no_face", pa.int32()),
    _f("frames_no_face_orig_had", pa.int32()),
    _f("faces", pa.int32()),
    _f("frames_leak", pa.int32()),
    _f("faces_leak", pa.int32()),
    _f("frames_match_patient", pa.int32()),
    _f("frames_match_original", pa.int32()),
    _f("frames_match_target", pa.int32()),
    _f("min_dist_patient", pa.float64()),
    _f("mean_dist_patient", pa.float64()),
    _f("mean_dist_original", pa.float64()),
    _f("mean_dist_target", pa.float64()),
    _f("attack_rank1", pa.float64(), True, "re-identification attack: share of probes whose nearest identity template is the patient"),
    _f("attack_map", pa.float64(), True, "the attack's mean reciprocal rank of the patient among the gallery's identities"),
    _f("attack_chance_rank1", pa.float64(), True, "rank-1 of a probe with no identity in it: 1 / identities"),
    _f("attack_chance_map", pa.float64(), True, "mean reciprocal rank of such a probe: H_K / K"),
    _f("attack_probes", pa.int32()),
    _f("attack_probes_used", pa.int32()),
    _f("attack_gallery", pa.int32(), True, "gallery embeddings used (as many per identity as the identity with the fewest has)"),
    *[_f(f"fe_{n}", pa.float64(), True, "clinical feature error (deid.metrics.clinical.feature_errors)") for n in FEATURE_NAMES],
    _f("deid_version", pa.string()),
    # 1.1
    _f("identity_frames", pa.int32(), True, "frames checked for faces (every evaluate.identity_every-th)"),
    _f("faces_embedded", pa.int32(), True, "faces found in the processed video that the identity model could embed"),
    _f("same_place_faces", pa.int32(), True, "original faces compared at the same place in the processed video"),
    _f("frames_match_same_place", pa.int32(), True,
       "frames where the processed video, embedded at an original face's box, still matches that face "
       "(weak faces must also beat a blank; see deid.evaluate)"),
    _f("mean_dist_same_place", pa.float64(), True, "mean distance at the same place (processed vs original face)"),
    _f("attack_identities", pa.int32(), True, "distinct identities in the re-identification gallery"),
    _f("patient_refs", pa.int32(), True, "patient embeddings distances are measured to"),
    _f("patient_source", pa.string(), True, "photos | original_video | none"),
    _f("target_refs", pa.int32(), True, "target / donor embeddings"),
    # 1.3
    _f("same_place_faces_too_small", pa.int32(), True,
       "original faces under audit.min_face_px (longer side) left out of the same-place check, as in the leak audit"),
]

STATUS = [
    _f("video", pa.string(), False),
    _f("method", pa.string(), False),
    _f("input_path", pa.string()),
    _f("input_sha256", pa.string()),
    _f("config_hash", pa.string()),
    _f("state", pa.string(), False, "done | failed | partial | planned | skipped"),
    _f("error", pa.string()),
    _f("error_kind", pa.string(), True, "deid.errors kind (decode_error, model_weights, leak, ...)"),
    _f("frames_read", pa.int32()),
    _f("frames_written", pa.int32()),
    _f("faces_detected", pa.int32(), True, "face regions from the detector"),
    _f("faces_interpolated", pa.int32()),
    _f("faces_held", pa.int32()),
    _f("faces_pose_placed", pa.int32(), True, "face regions placed from body keypoints"),
    _f("fail_closed_frames", pa.int32()),
    _f("leaks", pa.int32(), True, "frames the leak audit flagged"),
    _f("seconds_total", pa.float64()),
    _f("timings", pa.map_(pa.string(), pa.float64()), True, "seconds per stage"),
    _f("deid_version", pa.string()),
    _f("created_unix", pa.int64()),
    _f("output_path", pa.string(), True, "the published output (1.2)"),
]

_OKS_GROUPS = ("overall", "body", "head", "face", "hands", "feet")
PERFRAME = [
    *_KEY,
    _f("frame", pa.int32(), False, "0-based frame index"),
    *[_f(f"oks_{g}", pa.float32(), True,
         f"OKS, {g} group: mean over the original's persons of their best OKS against a processed person; "
         "NaN = no original person with visible points in the group") for g in _OKS_GROUPS],
    _f("persons", pa.int16(), True, "persons the pose estimator found in the processed frame"),
    _f("gt_persons", pa.int16(), True, "persons found in the original frame (ground truth)"),
    _f("faces_found", pa.int16(), True, "faces the attacker's detector found; null = frame not checked"),
    _f("min_dist_patient", pa.float32(), True, "min distance of a found face to the patient; NaN = none embedded"),
    _f("match_patient", pa.bool_(), True, "a found face is within the threshold of the patient"),
    _f("dist_same_place", pa.float32(), True, "min distance, processed vs original, at the original's face boxes"),
    _f("match_same_place", pa.bool_(), True, "same-place match (weak faces must also beat a blank)"),
]

PER_KEYPOINT = [
    *_KEY,
    _f("keypoint", pa.int16(), False, "index in the keypoint schema (wholebody133)"),
    _f("name", pa.string(), True),
    _f("region", pa.string(), True, "head | body | feet | face | left_hand | right_hand"),
    _f("mean_error", pa.float64(), True,
       "mean |processed - original| / sqrt(person area) over points found in both; NaN = never"),
    _f("missing_rate", pa.float64(), True, "fraction of the original's visible points the processed video lost"),
]

CLINICAL = [
    *_KEY,
    _f("feature", pa.string(), False, "deid.metrics.clinical.FEATURE_NAMES"),
    _f("value", pa.float64(), True, "feature on the processed video; NaN = not measurable"),
    _f("original_value", pa.float64(), True, "feature on the original video"),
    _f("relative_error", pa.float64(), True,
       "|value - original| / |original| (absolute difference for the decrement features, see error_kind)"),
    _f("error_kind", pa.string(), True, "relative | absolute"),
]

TABLES: dict[str, list[pa.Field]] = {
    "keypoints": KEYPOINTS,
    "identity": IDENTITY,
    "summary": SUMMARY,
    "status": STATUS,
}

#: tables added in schema 1.1 for ``deid evaluate``. Kept apart from :data:`TABLES` so
#: that code iterating over the original four (with sample data per kind) keeps working;
#: :func:`schema`, the writers and :func:`read_table` accept every kind in :data:`ALL_TABLES`.
EVALUATION_TABLES: dict[str, list[pa.Field]] = {
    "perframe": PERFRAME,
    "per_keypoint": PER_KEYPOINT,
    "clinical": CLINICAL,
}
ALL_TABLES: dict[str, list[pa.Field]] = {**TABLES, **EVALUATION_TABLES}


def schema(kind: str) -> pa.Schema:
    """The versioned schema of table ``kind`` (keypoints | identity | summary | status |
    perframe | per_keypoint | clinical)."""
    try:
        fields = ALL_TABLES[kind]
    except KeyError:
        raise InvalidInputError(f"unknown table {kind!r}; tables are {', '.join(ALL_TABLES)}") from None
    return pa.schema(fields, metadata={META_TABLE: kind.encode(), META_VERSION: SCHEMA_VERSION.encode()})


# ----------------------------------------------------------------------------- validation


def _columns(data: Any) -> dict[str, Any]:
    if isinstance(data, pa.Table):
        return {n: data.column(n) for n in data.column_names}
    try:
        import pandas as pd

        if isinstance(data, pd.DataFrame):
            return {str(c): data[c] for c in data.columns}
    except ImportError:  # pragma: no cover
        pass
    if isinstance(data, Mapping):
        return dict(data)
    rows = list(data)
    names: list[str] = []
    for r in rows:
        for k in r:
            if k not in names:
                names.append(k)
    return {n: [r.get(n) for r in rows] for n in names}


def _to_array(values: Any, typ: pa.DataType, name: str, kind: str) -> pa.Array:
    """One column as an Arrow array of ``typ``. NaN in float columns becomes null, so
    SQL aggregates skip "not measurable" values; pandas reads the nulls back as NaN."""
    import pyarrow.compute as pc

    try:
        if isinstance(values, pa.ChunkedArray):
            values = values.combine_chunks()
        if not isinstance(values, pa.Array):
            if str(getattr(values, "dtype", "")) == "category":
                values = values.astype(object)
            if pa.types.is_map(typ):
                rows = [list(v.items()) if isinstance(v, Mapping) else v for v in list(values)]
                return pa.array(rows, type=typ)
            values = pa.array(values, from_pandas=True)
        if pa.types.is_dictionary(values.type):
            values = values.dictionary_decode()
        if pa.types.is_floating(values.type):
            values = pc.if_else(pc.is_nan(values), pa.scalar(None, values.type), values)
        return values.cast(typ, safe=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, ValueError, OverflowError) as e:
        raise InvalidInputError(f"{kind} table: column {name!r} cannot be stored as {typ} ({e})") from None


def to_table(data: Any, kind: str) -> pa.Table:
    """Validate ``data`` (Arrow table, DataFrame, column dict or list of row dicts)
    against table ``kind`` and return it in schema order with the schema's metadata."""
    sch = schema(kind)
    cols = _columns(data)
    unknown = sorted(set(cols) - set(sch.names))
    if unknown:
        raise InvalidInputError(
            f"{kind} table: unknown column(s) {', '.join(unknown)} (schema {SCHEMA_VERSION}); "
            f"columns are: {', '.join(sch.names)}"
        )
    lengths = {len(v) for v in cols.values()}
    if len(lengths) > 1:
        raise InvalidInputError(f"{kind} table: columns have different lengths {sorted(lengths)}")
    n = lengths.pop() if lengths else 0
    arrays = []
    for fld in sch:
        if fld.name not in cols:
            if not fld.nullable:
                raise InvalidInputError(f"{kind} table: required column {fld.name!r} is missing")
            arrays.append(pa.nulls(n, fld.type))
            continue
        arr = _to_array(cols[fld.name], fld.type, fld.name, kind)
        if not fld.nullable and arr.null_count:
            raise InvalidInputError(f"{kind} table: column {fld.name!r} must not contain nulls ({arr.null_count} found)")
        arrays.append(arr)
    return pa.Table.from_arrays(arrays, schema=sch)


def check_version(meta: Mapping[bytes, bytes] | None, kind: str, where: str) -> str:
    """Raise unless ``meta`` says table ``kind`` with our major version; returns the version."""
    meta = meta or {}
    got_kind = meta.get(META_TABLE, b"").decode()
    got_ver = meta.get(META_VERSION, b"").decode()
    if got_kind != kind:
        raise InvalidInputError(
            f"{where}: is not a deid {kind!r} table (file says {got_kind or 'nothing'!r}); "
            "point the reader at the right file"
        )
    if got_ver.split(".")[0] != SCHEMA_VERSION.split(".")[0]:
        raise InvalidInputError(
            f"{where}: {kind} table has schema version {got_ver or 'none'}, this deid reads {SCHEMA_VERSION}; "
            "re-run the evaluation with this version or read it with the deid that wrote it"
        )
    return got_ver


# ----------------------------------------------------------------------------- files


def write_table(data: Any, path: str | os.PathLike, kind: str) -> Path:
    """Validate and write one Parquet file atomically (no half-written file under ``path``)."""
    import pyarrow.parquet as pq

    from ..io.atomic import atomic_output

    table = to_table(data, kind)
    with atomic_output(path) as tmp:
        pq.write_table(table, tmp)
    return Path(path)


def write_dataset(data: Any, root: str | os.PathLike, kind: str, partition_by: Sequence[str] = PARTITION_BY) -> Path:
    """Validate and write a hive-partitioned dataset under ``root`` (see module doc).
    Partitions present in ``data`` are replaced; others are left as they are."""
    import pyarrow.dataset as ds

    table = to_table(data, kind)
    sch = table.schema
    for p in partition_by:
        if p not in sch.names:
            raise InvalidInputError(f"{kind} table: cannot partition by {p!r}; it is not a column")
    part = ds.partitioning(pa.schema([sch.field(p) for p in partition_by]), flavor="hive")
    Path(root).mkdir(parents=True, exist_ok=True)
    ds.write_dataset(
        table,
        str(root),
        format="parquet",
        partitioning=part,
        basename_template="part-{i}.parquet",
        existing_data_behavior="delete_matching",
    )
    return Path(root)


def read_table(path: str | os.PathLike, kind: str) -> pa.Table:
    """Read a file or a partitioned dataset directory written by this module, check its
    table name and version, and return it in the current schema (columns a newer minor
    version added are filled with nulls)."""
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.exists():
        raise InvalidInputError(f"{p}: no such {kind} table; run the evaluation first or fix the path")
    if p.is_dir():
        files = sorted(f for f in p.rglob("*.parquet") if not f.name.startswith("."))
        if not files:
            raise InvalidInputError(f"{p}: directory holds no Parquet files")
        for f in files:
            check_version(pq.read_schema(f).metadata, kind, str(f))
        # explicit partition types: inference would turn a video id like "001" into an int
        part = ds.partitioning(pa.schema([schema(kind).field(c) for c in PARTITION_BY]), flavor="hive")
        dataset = ds.dataset(str(p), format="parquet", partitioning=part)
        table = dataset.to_table()
    else:
        check_version(pq.read_schema(p).metadata, kind, str(p))
        table = pq.read_table(p)
    sch = schema(kind)
    extra = [n for n in table.column_names if n not in sch.names]
    if extra:  # a newer minor version's extra columns are dropped, not an error
        table = table.drop_columns(extra)
    return to_table(table, kind)


# ----------------------------------------------------------------------------- keypoints


def keypoints_table(
    video: str,
    method: str,
    frames: Sequence[np.ndarray],
    frame_ids: Iterable[int] | None = None,
    pose_backend: str = "",
) -> pa.Table:
    """Long-format keypoints table from per-frame (P, K, 3) arrays."""
    ids = list(range(len(frames))) if frame_ids is None else [int(i) for i in frame_ids]
    if len(ids) != len(frames):
        raise InvalidInputError(f"keypoints_table: {len(ids)} frame ids for {len(frames)} frames")
    parts = {k: [] for k in ("frame", "person", "keypoint", "x", "y", "score")}
    for fid, f in zip(ids, frames):
        a = np.asarray(getattr(f, "data", f), np.float32)
        if a.size == 0:
            continue
        if a.ndim != 3 or a.shape[2] != 3:
            raise InvalidInputError(f"keypoints_table: frame {fid} keypoints must be (P, K, 3), got {a.shape}")
        p, k = a.shape[:2]
        parts["frame"].append(np.full(p * k, fid, np.int32))
        parts["person"].append(np.repeat(np.arange(p, dtype=np.int16), k))
        parts["keypoint"].append(np.tile(np.arange(k, dtype=np.int16), p))
        parts["x"].append(a[:, :, 0].reshape(-1))
        parts["y"].append(a[:, :, 1].reshape(-1))
        parts["score"].append(a[:, :, 2].reshape(-1))
    cols: dict[str, Any] = {}
    for k, v in parts.items():
        cols[k] = pa.array(np.concatenate(v) if v else np.zeros(0, np.float32 if k in ("x", "y", "score") else np.int32))
    n = len(cols["frame"])
    cols["video"] = pa.array([video] * n, pa.string())
    cols["method"] = pa.array([method] * n, pa.string())
    cols["pose_backend"] = pa.array([pose_backend] * n, pa.string())
    return to_table(cols, "keypoints")


def keypoints_from_table(table: Any, num_frames: int | None = None, num_keypoints: int | None = None) -> list[np.ndarray]:
    """Inverse of :func:`keypoints_table` for one (video, method): per-frame (P, K, 3)
    float32 arrays, frames 0..max (or ``num_frames``); frames without rows are empty."""
    t = to_table(table, "keypoints") if not isinstance(table, pa.Table) else table
    if len(set(t.column("video").to_pylist())) > 1 or len(set(t.column("method").to_pylist())) > 1:
        raise InvalidInputError("keypoints_from_table: filter the table to one video and one method first")
    fr = t.column("frame").to_numpy()
    pe = t.column("person").to_numpy().astype(np.int64)
    kp = t.column("keypoint").to_numpy().astype(np.int64)
    xyz = np.stack([t.column(c).to_numpy(zero_copy_only=False) for c in ("x", "y", "score")], axis=1).astype(np.float32)
    k = int(num_keypoints if num_keypoints is not None else (kp.max() + 1 if len(kp) else 0))
    n = int(num_frames if num_frames is not None else (fr.max() + 1 if len(fr) else 0))
    out = []
    for f in range(n):
        sel = fr == f
        if not sel.any():
            out.append(np.zeros((0, k, 3), np.float32))
            continue
        a = np.zeros((int(pe[sel].max()) + 1, k, 3), np.float32)
        a[pe[sel], kp[sel]] = xyz[sel]
        out.append(a)
    return out


# ----------------------------------------------------------------------------- status


def status_rows(
    result: Any,
    video: str = "",
    input_sha256: str = "",
    config_hash: str = "",
    deid_version: str = "",
    created_unix: int | None = None,
) -> list[dict[str, Any]]:
    """Status rows (one per method output; one ``method = ""`` row for a video that
    failed before any output) from a :class:`deid.pipeline.VideoResult`-like object
    (duck-typed: ``input``, ``status``, ``error``, ``error_kind``, ``frames_read``,
    ``counts``, ``timings``, ``outputs`` of ``method`` / ``frames_written`` / ``leak``)."""
    import time

    counts = dict(getattr(result, "counts", {}) or {})
    timings = {str(k): float(v) for k, v in (getattr(result, "timings", {}) or {}).items()}
    inp = getattr(result, "input", None)  # None: an audit record that leaves the path out (io.output_names=pseudonym)
    base = {
        "video": video or Path(str(inp or "")).stem,
        "input_path": None if inp is None else str(inp),
        "input_sha256": input_sha256,
        "config_hash": config_hash,
        "state": str(result.status),
        "error": str(getattr(result, "error", "") or ""),
        "error_kind": str(getattr(result, "error_kind", "") or ""),
        "frames_read": int(getattr(result, "frames_read", 0) or 0),
        "faces_detected": counts.get("regions_detected"),
        "faces_interpolated": counts.get("regions_interpolated"),
        "faces_held": counts.get("regions_held"),
        "faces_pose_placed": counts.get("regions_pose"),
        "fail_closed_frames": counts.get("frames_fail_closed"),
        "seconds_total": float(sum(timings.values())) if timings else None,
        "timings": timings,
        "deid_version": deid_version,
        "created_unix": int(time.time()) if created_unix is None else int(created_unix),
    }
    outputs = list(getattr(result, "outputs", []) or [])
    if not outputs:
        return [{**base, "method": "", "frames_written": 0, "leaks": None}]
    rows = []
    for mo in outputs:
        leak = getattr(mo, "leak", {}) or {}
        rows.append(
            {**base, "method": str(mo.method), "frames_written": int(getattr(mo, "frames_written", 0) or 0),
             "leaks": leak.get("leaks") if isinstance(leak, Mapping) else None,
             "output_path": str(getattr(mo, "path", "") or "") or None}
        )
    return rows


# ----------------------------------------------------------------------------- summary


def summary_row(
    video: str,
    method: str,
    *,
    pose: Any = None,
    identity: Mapping[str, Any] | None = None,
    attack: Any = None,
    feature_errors: Mapping[str, float] | None = None,
    pose_backend: str = "",
    identity_backend: str = "",
    identity_threshold: float | None = None,
    frames: int | None = None,
    deid_version: str = "",
) -> dict[str, Any]:
    """One summary row from the metric results: ``pose`` a
    :class:`deid.metrics.oks.PoseEvaluation`, ``identity`` the dict of
    :func:`deid.metrics.identity.summarize_identity`, ``attack`` a
    :class:`deid.metrics.reid.AttackResult`, ``feature_errors`` the dict of
    :func:`deid.metrics.clinical.feature_errors`. Parts not given stay null."""
    names = set(schema("summary").names)
    row: dict[str, Any] = {
        "video": video,
        "method": method,
        "pose_backend": pose_backend,
        "identity_backend": identity_backend,
        "identity_threshold": identity_threshold,
        "frames": frames,
        "deid_version": deid_version,
    }
    if pose is not None:
        for g, v in pose.ap.items():
            if f"ap_{g}" in names:
                row[f"ap_{g}"] = v
        row["ap50_overall"] = pose.ap50.get("overall")
        row["ap75_overall"] = pose.ap75.get("overall")
        fo = pose.frame_oks.get("overall")
        row["oks_mean"] = float(np.nanmean(fo)) if fo is not None and np.isfinite(fo).any() else None
        if frames is None:
            row["frames"] = len(fo) if fo is not None else None
    if identity is not None:
        for k, v in identity.items():
            if k in names and k != "frames":
                row[k] = v
    if attack is not None:
        for k, v in attack.to_dict().items():
            if k in names:
                row[k] = v
    if feature_errors is not None:
        for k, v in feature_errors.items():
            if f"fe_{k}" in names:
                row[f"fe_{k}"] = v
    return row
