"""Read a METRICS_DIR (what ``deid evaluate`` or the Ray evaluation stage wrote).

Layout (the contract shared by the evaluation and the report)::

    run.json               what was evaluated, with which models and config
    summary.parquet        one row per (video, method)             kind "summary"
    status.parquet         one row per (video, method) audit record kind "status"
    per_keypoint.parquet   (video, method, keypoint) errors         kind "per_keypoint"
    clinical.parquet       (video, method, feature) values/errors   kind "clinical"
    keypoints/             video=/method= partitions                kind "keypoints"
    identity/              video=/method= partitions                kind "identity"
    perframe/              video=/method= partitions                kind "perframe"

Why a reader class and not "load everything into pandas": an archive run of 10,000
videos has tens of millions of per-frame and per-face rows. The small tables (summary,
status, clinical, per-keypoint) are read whole; the partitioned ones are only ever
read *filtered* (one video's per-frame rows, a few frames' keypoints) or *streamed*
in record batches with a column projection (identity distance histograms), so the
report's memory does not grow with the archive.

Every missing piece becomes a human-readable note in :attr:`MetricsDir.notes` instead
of an error, so a partial run still renders (the report says what it could not show).
Only a directory with neither ``run.json`` nor ``summary.parquet`` is refused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from functools import cached_property
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pyarrow as pa

from ..errors import InvalidInputError
from ..metrics import schemas

log = logging.getLogger(__name__)

#: file / directory name of each table in a METRICS_DIR (the contract above)
TABLE_PATHS: dict[str, str] = {
    "summary": "summary.parquet",
    "status": "status.parquet",
    "per_keypoint": "per_keypoint.parquet",
    "clinical": "clinical.parquet",
    "keypoints": "keypoints",
    "identity": "identity",
    "perframe": "perframe",
}

#: methods in the order the report shows them (the paper's order: swap first); others after
METHOD_ORDER = ("original", "swap", "mask", "blur", "pixelate")


def order_methods(methods: Sequence[str]) -> list[str]:
    """Methods in report order: original (the sanity row), swap, mask, blur, pixelate, then any others by name."""
    ms = list(dict.fromkeys(str(m) for m in methods if m is not None and str(m) != ""))
    known = [m for m in METHOD_ORDER if m in ms]
    return known + sorted(m for m in ms if m not in METHOD_ORDER)


def _known(kind: str) -> bool:
    return kind in schemas.ALL_TABLES


def _check_file_meta(path: Path, kind: str) -> None:
    """Refuse a file that says it is another table or another major schema version.
    Kinds this deid's schemas.py does not know yet are accepted when their ``deid.table``
    tag matches (or is absent), so a report can read an evaluation written by a newer minor."""
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    if _known(kind):
        schemas.check_version(meta, kind, str(path))
        return
    got = meta.get(schemas.META_TABLE, b"").decode()
    if got and got != kind:
        raise InvalidInputError(f"{path}: is not a deid {kind!r} table (file says {got!r}); fix the METRICS_DIR layout")


@contextlib.contextmanager
def _readable(kind: str, where: Path):
    """Turn a damaged or foreign Parquet file (Arrow's "magic bytes not found", a column
    of another type in one partition) into one clear error naming the table, instead of
    a traceback. No part of a table is skipped: a report that left out a damaged
    identity partition could say "no leak" about frames it never read."""
    try:
        yield
    except pa.ArrowException as e:
        raise InvalidInputError(
            f"{where}: cannot read the {kind} table ({e}); the file is damaged or was written by another program. "
            "Re-run `deid evaluate` for the video it belongs to (or rebuild the single tables with "
            "deid.evaluate.aggregate), then the report"
        ) from None


def _partitioning(kind: str):
    import pyarrow.dataset as ds

    # explicit string types: inference would turn a video id like "001" into an int
    if _known(kind):
        fields = [schemas.schema(kind).field(c) for c in schemas.PARTITION_BY]
    else:
        fields = [pa.field(c, pa.string()) for c in schemas.PARTITION_BY]
    return ds.partitioning(pa.schema(fields), flavor="hive")


def _finite(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


class MetricsDir:
    """Read-only view of one METRICS_DIR. Small tables are cached; large ones are read filtered."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        if not self.root.is_dir():
            raise InvalidInputError(
                f"{self.root}: no such metrics directory; run `deid evaluate ... --out {self.root}` first"
            )
        self.notes: list[str] = []
        has_run = (self.root / "run.json").is_file()
        has_summary = (self.root / TABLE_PATHS["summary"]).exists()
        if not (has_run or has_summary):
            raise InvalidInputError(
                f"{self.root}: holds neither run.json nor summary.parquet, so it is not a METRICS_DIR; "
                "point `deid report` at the directory `deid evaluate --out` wrote"
            )
        self._datasets: dict[str, Any] = {}

    # ------------------------------------------------------------------ run.json
    @cached_property
    def run(self) -> dict[str, Any]:
        p = self.root / "run.json"
        if not p.is_file():
            self.notes.append("run.json is missing: the run's configuration, model versions and video paths are unknown.")
            return {}
        try:
            data = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise InvalidInputError(f"{p}: cannot read run.json ({e}); re-run the evaluation or aggregation") from None
        if not isinstance(data, dict):
            raise InvalidInputError(f"{p}: run.json must hold a JSON object, got {type(data).__name__}")
        return data

    @cached_property
    def videos(self) -> dict[str, dict[str, Any]]:
        """run.json's video entries by video id (empty when run.json is missing)."""
        out: dict[str, dict[str, Any]] = {}
        for v in self.run.get("videos") or []:
            if isinstance(v, dict) and v.get("video") is not None:
                out[str(v["video"])] = v
        return out

    def resolve(self, path: str | None) -> Path | None:
        """A path from run.json: absolute as is; relative ones are tried against the
        metrics directory, its parent, then the working directory."""
        if not path:
            return None
        p = Path(path)
        if p.is_absolute():
            return p
        for base in (self.root, self.root.parent, Path.cwd()):
            if (base / p).exists():
                return base / p
        return self.root / p

    @property
    def threshold(self) -> float:
        """The identity model's same-person distance (run.json, else the summary, else dlib's 0.6)."""
        t = _finite((self.run.get("identity_backend") or {}).get("threshold"))
        if t is None and not self.summary.empty and "identity_threshold" in self.summary:
            vals = self.summary["identity_threshold"].dropna()
            t = _finite(vals.iloc[0]) if len(vals) else None
        return 0.6 if t is None else t

    # ------------------------------------------------------------------ small tables
    def table_path(self, kind: str) -> Path:
        return self.root / TABLE_PATHS[kind]

    def _read_small(self, kind: str):
        p = self.table_path(kind)
        if not p.exists():
            return None
        with _readable(kind, p):
            return self._read_small_unchecked(kind, p)

    def _read_small_unchecked(self, kind: str, p: Path):
        import pandas as pd
        import pyarrow.parquet as pq

        if _known(kind):
            return schemas.read_table(p, kind).to_pandas()
        if p.is_dir():
            files = sorted(f for f in p.rglob("*.parquet") if not f.name.startswith("."))
            if not files:
                return None
            _check_file_meta(files[0], kind)
            import pyarrow.dataset as ds

            return ds.dataset(str(p), format="parquet", partitioning=_partitioning(kind)).to_table().to_pandas()
        _check_file_meta(p, kind)
        return pd.DataFrame(pq.read_table(p).to_pandas())

    @cached_property
    def summary(self):
        """summary.parquet as a DataFrame (empty, with a note, when absent)."""
        import pandas as pd

        df = self._read_small("summary")
        if df is None:
            self.notes.append("summary.parquet is missing: no pose or identity figures (run `deid evaluate`).")
            return pd.DataFrame(columns=schemas.schema("summary").names)
        for c in ("video", "method"):
            df[c] = df[c].astype(str)
        return df

    @cached_property
    def status(self):
        df = self._read_small("status")
        if df is None:
            self.notes.append("status.parquet is missing: per-video status comes from the audit records alone.")
        return df

    @cached_property
    def per_keypoint(self):
        df = self._read_small("per_keypoint")
        if df is None:
            self.notes.append("per_keypoint.parquet is missing: no per-keypoint error plot.")
        return df

    @cached_property
    def clinical(self):
        df = self._read_small("clinical")
        if df is None:
            self.notes.append("clinical.parquet is missing: clinical feature errors come from the summary columns.")
        return df

    # ------------------------------------------------------------------ methods / videos
    @cached_property
    def methods(self) -> list[str]:
        """Every method the run has (summary rows and run.json outputs), in report order."""
        ms: list[str] = []
        if not self.summary.empty:
            ms += list(self.summary["method"].unique())
        for v in self.videos.values():
            ms += list((v.get("processed") or {}).keys())
        return order_methods(ms)

    @cached_property
    def video_ids(self) -> list[str]:
        ids = list(self.videos)
        if not self.summary.empty:
            ids += [v for v in self.summary["video"].unique() if v not in self.videos]
        return list(dict.fromkeys(ids))

    # ------------------------------------------------------------------ partitioned tables
    def _dataset(self, kind: str):
        """The pyarrow dataset of a partitioned table, or None when it is absent/empty."""
        if kind in self._datasets:
            return self._datasets[kind]
        import pyarrow.dataset as ds

        p = self.table_path(kind)
        dset = None
        with _readable(kind, p):
            if p.is_dir():
                first = next((f for f in sorted(p.rglob("*.parquet")) if not f.name.startswith(".")), None)
                if first is not None:
                    _check_file_meta(first, kind)
                    dset = ds.dataset(str(p), format="parquet", partitioning=_partitioning(kind))
            elif p.with_suffix(".parquet").is_file():  # a single-file variant of the table
                _check_file_meta(p.with_suffix(".parquet"), kind)
                dset = ds.dataset(str(p.with_suffix(".parquet")), format="parquet")
        self._datasets[kind] = dset
        return dset

    def has(self, kind: str) -> bool:
        if kind in ("keypoints", "identity", "perframe"):
            return self._dataset(kind) is not None
        return self.table_path(kind).exists()

    def read_filtered(self, kind: str, *, video: str | None = None, methods: Sequence[str] | None = None,
                      frames: Sequence[int] | None = None, columns: Sequence[str] | None = None):
        """Rows of a partitioned table for one video (and some methods / frames) as a
        DataFrame; None when the table is absent."""
        import pyarrow.dataset as ds

        dset = self._dataset(kind)
        if dset is None:
            return None
        cond = None

        def _and(a, b):
            return b if a is None else (a & b)

        if video is not None:
            cond = _and(cond, ds.field("video") == str(video))
        if methods is not None:
            cond = _and(cond, ds.field("method").isin([str(m) for m in methods]))
        if frames is not None:
            cond = _and(cond, ds.field("frame").isin(pa.array([int(f) for f in frames], pa.int32())))
        cols = None
        if columns is not None:
            names = set(dset.schema.names)
            cols = [c for c in columns if c in names]
        with _readable(kind, self.table_path(kind)):
            table = dset.to_table(filter=cond, columns=cols)
        df = table.to_pandas()
        for c in ("video", "method"):
            if c in df:
                df[c] = df[c].astype(str)
        return df

    def perframe(self, video: str):
        """One video's per-frame rows (all methods), sorted by method and frame; None when absent."""
        df = self.read_filtered("perframe", video=video)
        if df is None or df.empty:
            return df
        return df.sort_values(["method", "frame"]).reset_index(drop=True)

    def keypoints(self, video: str, methods: Sequence[str], frames: Sequence[int]) -> dict[tuple[str, int], np.ndarray]:
        """``{(method, frame): (P, K, 3) float32}`` for the requested frames (empty dict when absent)."""
        df = self.read_filtered("keypoints", video=video, methods=methods, frames=frames,
                                columns=["method", "frame", "person", "keypoint", "x", "y", "score"])
        out: dict[tuple[str, int], np.ndarray] = {}
        if df is None or df.empty:
            return out
        k = int(df["keypoint"].max()) + 1
        for (m, f), g in df.groupby(["method", "frame"], sort=False):
            pe = g["person"].to_numpy(np.int64)
            kp = g["keypoint"].to_numpy(np.int64)
            a = np.zeros((int(pe.max()) + 1, max(k, int(kp.max()) + 1), 3), np.float32)
            xyz = np.stack([g[c].to_numpy(np.float32, na_value=np.nan) for c in ("x", "y", "score")], axis=1)
            xyz[~np.isfinite(xyz)] = 0.0
            a[pe, kp] = xyz
            out[(str(m), int(f))] = a
        return out

    def iter_batches(self, kind: str, columns: Sequence[str], batch_size: int = 1 << 16) -> Iterator[pa.RecordBatch]:
        """Stream a partitioned table in record batches with only ``columns`` (that exist)."""
        dset = self._dataset(kind)
        if dset is None:
            return
        names = set(dset.schema.names)
        cols = [c for c in columns if c in names]
        with _readable(kind, self.table_path(kind)):
            yield from dset.to_batches(columns=cols, batch_size=batch_size)

    # ------------------------------------------------------------------ audit records
    def audit(self, video: str, method: str) -> dict[str, Any] | None:
        """The pipeline's audit record of one output (run.json's path, else beside the processed video)."""
        entry = self.videos.get(str(video)) or {}
        path = (entry.get("audit") or {}).get(method)
        p = self.resolve(path) if path else None
        if p is None:
            proc = self.resolve((entry.get("processed") or {}).get(method))
            if proc is not None:
                p = proc.with_name(proc.name.rsplit(".", 1)[0] + ".audit.json")
        if p is None or not p.is_file():
            return None
        try:
            data = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as e:
            log.warning("%s: cannot read audit record (%s)", p, e)
            return None
        return data if isinstance(data, dict) else None
