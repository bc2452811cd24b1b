"""Whole archives: the pure pieces an archive run is made of (no Ray here).

The Ray adapters in ``ray_jobs/`` only schedule these functions; everything that decides
*what* happens lives here, so it is testable in one process and the in-process batch
and the Ray job cannot drift apart.

An archive run, step by step
----------------------------
1. :func:`load_manifest` reads a CSV / Parquet manifest (or scans a folder) and validates
   every row up front: missing files, paths escaping the archive root, unknown methods,
   swap without a donor, two rows that would write the same output. A bad row becomes
   one clear :class:`RowError` (and a ``failed`` status row); the other rows still run.
2. :func:`plan_video` probes and hashes one video, decides per method whether it is
   already done (status table, else the audit record beside the output: same input
   sha256, same :func:`method_config_hash`, output present, and in either case the
   record describing that very file, :func:`record_proves`) and cuts the rest into
   :class:`Segment` s: contiguous frame ranges with ``ray.segment_overlap`` frames of
   context on each side, so tracking at a segment's edges sees what a whole-video run
   sees (:func:`check_segmenting` insists the overlap covers ``track.lookahead``).
3. :func:`render_planned_segment` renders one segment into a *private work folder*
   (never the output folder; always an MP4 file), then writes a small JSON marker; a
   killed run finds the marker and does not render that segment again. The work folder
   is deid's own (:func:`work_folder`, marked with :data:`WORK_MARK`); one over the
   archive or the outputs is refused (:func:`check_work_folder`).
4. :func:`finalize_video` stitches the segments of each method by remux
   (:mod:`deid.io.concat`, no re-encode) into an atomic temporary in the output folder,
   verifies frame counts, runs the leak audit and writes the audit records
   (:func:`deid.pipeline.finalize_outputs`), publishes, and returns the status rows.
5. :class:`StatusTable` keeps one row per (video, method) in ``<out>/status.parquet``
   (table kind ``status``); rewritten atomically as videos finish.

Nothing half-written ever carries a final name: segment files are temporaries until
complete, outputs are published by rename, and a rerun deletes the temporaries a killed
run left (:func:`remove_partials_of`).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import math
import os
import pickle
import re
import shutil
import stat
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Iterable, Mapping, Sequence

from .config import Config
from .errors import ConfigError, DeidError, InvalidInputError, OutputExistsError, VideoDecodeError, storage_error
from .types import VideoInfo

log = logging.getLogger(__name__)

#: states whose output is published and current (a partial output is kept on purpose)
DONE_STATES = ("done", "partial")
STATUS_FILE = "status.parquet"
#: manifest column -> accepted header names (case-insensitive)
COLUMNS: dict[str, tuple[str, ...]] = {
    "video": ("video", "path", "video_path", "file"),
    "video_id": ("video_id", "id"),
    "patient": ("patient_id", "patient"),
    "donor": ("donor", "donor_id"),
    "methods": ("methods", "method"),
    "fixed_regions": ("fixed_regions", "regions"),
}
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


# ============================================================================ manifest


@dataclass(frozen=True)
class ArchiveEntry:
    """One valid manifest row."""

    row: int  # 1-based data row of the manifest (0 for folder scans)
    video: str  # absolute, resolved path
    rel_dir: str  # sub-folder of the archive root (posix, "" = top); outputs mirror it
    video_id: str  # unique id: status rows, metrics partitions, work folders
    patient: str  # patient id: one swap model per patient
    donor: str = ""  # swap donor (consenting target identity)
    methods: tuple[str, ...] = ("blur",)
    name: str = ""  # output stem when not the video's own (another video in its folder shares that)
    #: io.output_names=pseudonym: outputs named after the input's sha256, all in the output
    #: folder (the archive's folder and file names may name the patient)
    pseudonymous: bool = False
    #: the row's own burnt-in-text boxes (manifest column ``fixed_regions``), filled on top
    #: of ``anonymize.fixed_regions``: one archive can mix devices (:func:`entry_config`)
    fixed_regions: tuple[tuple[float, float, float, float], ...] = ()

    def output_dir(self, out_dir: str | os.PathLike) -> Path:
        if self.pseudonymous or not self.rel_dir:
            return Path(out_dir)
        return Path(out_dir) / self.rel_dir

    def output_paths(self, out_dir: str | os.PathLike, container: str = "mp4", input_sha256: str | None = None) -> dict[str, Path]:
        """``<out>/<rel_dir>/<stem>.<method>.<container>`` per method (the in-process naming;
        ``<stem>-<hash>`` for videos of one folder that share a stem); pseudonymous:
        ``<out>/<first 16 hex of input_sha256>.<method>.<container>``."""
        from .pipeline import output_path, pseudonym

        d = self.output_dir(out_dir)
        if self.pseudonymous:
            if not input_sha256:
                raise ValueError(f"{self.video_id}: pseudonymous output names need the input's sha256")
            return {m: output_path(self.video, d, m, container, pseudonym(input_sha256)) for m in self.methods}
        return {m: output_path(self.video, d, m, container, self.name or None) for m in self.methods}


@dataclass(frozen=True)
class RowError:
    """A manifest row that cannot run, with a message that names the row and the fix."""

    row: int
    video: str  # as written in the manifest
    video_id: str
    error: str
    kind: str = InvalidInputError.kind


@dataclass(frozen=True)
class Manifest:
    source: str
    root: str
    entries: tuple[ArchiveEntry, ...]
    errors: tuple[RowError, ...]

    def __len__(self) -> int:
        return len(self.entries) + len(self.errors)

    @property
    def patients(self) -> dict[str, list[ArchiveEntry]]:
        """Entries that need a swap model, grouped by patient (one model per patient)."""
        out: dict[str, list[ArchiveEntry]] = {}
        for e in self.entries:
            if "swap" in e.methods:
                out.setdefault(e.patient, []).append(e)
        return out


def parse_methods(text: Any, default: Sequence[str] = ()) -> tuple[str, ...]:
    """``"blur, mask"`` / ``"blur|mask"`` / a list of such -> ``("blur", "mask")`` (each
    once, in order); empty -> ``default``.
    Raises ConfigError for an unknown method."""
    from .anonymize import METHODS

    if text is None or (isinstance(text, float) and math.isnan(text)):
        items: list[str] = []
    elif isinstance(text, (list, tuple)):
        items = [x for t in text for x in re.split(r"[,;|\s]+", str(t))]
    else:
        items = re.split(r"[,;|\s]+", str(text))
    out: list[str] = []
    for m in (i.strip().lower() for i in items):
        if not m:
            continue
        if m not in METHODS:
            raise ConfigError(f"unknown method {m!r}; choose from {', '.join(METHODS)}")
        if m not in out:
            out.append(m)
    return tuple(out) if out else tuple(default)


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return str(v).strip()


def _read_rows(src: Path) -> list[dict[str, Any]]:
    suffix = src.suffix.lower()
    if suffix in (".csv", ".tsv"):
        with open(src, newline="", encoding="utf-8-sig") as fh:
            return list(csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ","))
    if suffix in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            return pq.read_table(src).to_pylist()
        except Exception as e:  # noqa: BLE001 - pyarrow raises several kinds for a bad file
            raise ConfigError(f"manifest {src} is not a readable Parquet file ({e})") from None
    raise ConfigError(f"manifest {src}: use a .csv, .tsv or .parquet file, or a folder of videos to scan")


def _normalise(row: Mapping[str, Any], header: Mapping[str, str]) -> dict[str, str]:
    return {canon: _cell(row.get(orig)) for orig, canon in header.items()}


def _header_map(names: Iterable[str], src: Path) -> dict[str, str]:
    """Original header -> canonical column. Unknown columns are kept out (notes etc.)."""
    alias = {a: canon for canon, names_ in COLUMNS.items() for a in names_}
    out: dict[str, str] = {}
    for n in names:
        canon = alias.get(str(n).strip().lower())
        if canon and canon not in out.values():
            out[n] = canon
    if "video" not in out.values():
        raise ConfigError(
            f"manifest {src} has no video column (columns: {', '.join(map(str, names)) or 'none'}); "
            f"name one of them {' / '.join(COLUMNS['video'])}"
        )
    return out


def _row_regions(cell: Any) -> tuple[tuple[float, float, float, float], ...]:
    """A manifest's ``fixed_regions`` cell: a YAML / JSON list of ``[x0, y0, x1, y1]``
    (fractions of the upright frame, as ``anonymize.fixed_regions``), or empty."""
    if cell is None or (isinstance(cell, str) and not cell.strip()):
        return ()
    if isinstance(cell, str):
        import yaml

        try:
            cell = yaml.safe_load(cell)
        except yaml.YAMLError as e:
            raise ConfigError(f"fixed_regions {cell!r} is not a list of [x0, y0, x1, y1] ({e.__class__.__name__})") from None
    from .config import AnonymizeConfig

    if not isinstance(cell, (list, tuple)):
        raise ConfigError(f"fixed_regions {cell!r} is not a list of [x0, y0, x1, y1], e.g. [[0, 0, 0.4, 0.08]]")
    return AnonymizeConfig(fixed_regions=tuple(cell)).fixed_regions  # validated as the config's


def entry_config(cfg: Config, entry: "ArchiveEntry") -> Config:
    """``cfg`` for one manifest row: its ``fixed_regions`` added to the configuration's
    (the same boxes once). The hash, the render and the audit record of that row's
    outputs all use this configuration."""
    if not entry.fixed_regions:
        return cfg
    regions = tuple(dict.fromkeys(tuple(cfg.anonymize.fixed_regions) + tuple(entry.fixed_regions)))
    return replace(cfg, anonymize=replace(cfg.anonymize, fixed_regions=regions))


def _row_id(video: str, base: Path, n: int) -> str:
    """The id a bad row's status is kept under: the one the row gets once it is fixed
    (its folder below the archive root and its stem, as :func:`_derive_id`), so a fixed
    row replaces its failure instead of leaving it beside the new rows."""
    if not video:
        return f"row{n}"
    given = Path(video).expanduser()
    p = Path(os.path.normpath(given if given.is_absolute() else base / given))
    rel = p.parent.relative_to(base).as_posix() if _inside(p.parent, base) else ""
    return _derive_id("" if rel == "." else rel, p.stem)


def _derive_id(rel_dir: str, stem: str) -> str:
    raw = f"{rel_dir}/{stem}" if rel_dir else stem
    s = re.sub(r"[^A-Za-z0-9._-]+", "_", raw.replace("/", "__")).strip("._") or "video"
    return s[:128]


def _inside(p: Path, root: Path) -> bool:
    return p == root or root in p.parents


def load_manifest(
    source: str | os.PathLike,
    *,
    root: str | os.PathLike | None = None,
    methods: Sequence[str] = ("blur",),
    donor: str = "",
    out_dir: str | os.PathLike | None = None,
    exclude: Sequence[str | os.PathLike] = (),
    container: str = "mp4",
    output_names: str = "input",
) -> Manifest:
    """Read and validate a manifest (see the module doc).

    ``source``: a ``.csv`` / ``.tsv`` / ``.parquet`` file, or a folder scanned recursively
    for videos. ``root``: the archive root; relative paths resolve against it (default:
    the manifest's folder) and no relative path may leave it. When ``root`` is given
    explicitly, absolute paths must lie inside it too. ``methods`` / ``donor``: defaults
    for rows without those columns. ``out_dir`` / ``exclude``: folders whose files are
    never inputs (a folder scan would otherwise pick up earlier outputs).

    Raises :class:`ConfigError` only when the manifest as a whole is unusable (missing,
    unreadable, no video column); bad rows come back in ``Manifest.errors``."""
    src = Path(source).expanduser()
    if not src.exists():
        raise ConfigError(f"manifest {src} not found; give a CSV / Parquet manifest or a folder of videos")
    # the output folder, and the default work folder beside it (inside the archive when
    # the outputs are), hold no inputs: a scan would otherwise take segments for videos
    never = [Path(p).expanduser().resolve() for p in ([out_dir, default_work_root(out_dir)] if out_dir else []) + list(exclude)]
    folder_scan = src.is_dir()
    if folder_scan and out_dir and _inside(src.resolve(), Path(out_dir).expanduser().resolve()):
        raise ConfigError(
            f"the output folder {out_dir} is the archive folder {src} or contains it; outputs must be kept apart "
            "from inputs: choose an output folder outside the archive (or a sub-folder of it)"
        )
    if folder_scan:
        from .pipeline import discover_inputs, scanned_inputs

        base = Path(root).expanduser().resolve() if root else src.resolve()
        rows = [
            {"video": str(p.resolve())}
            for p in scanned_inputs([p for p in discover_inputs([src]) if not any(_inside(p.resolve(), n) for n in never)], src)
        ]
        header = {"video": "video"}
        explicit_root = True
    else:
        base = Path(root).expanduser().resolve() if root else src.resolve().parent
        raw_rows = _read_rows(src)
        names: list[str] = list(raw_rows[0].keys()) if raw_rows else []
        if not raw_rows and src.suffix.lower() in (".csv", ".tsv"):
            with open(src, newline="", encoding="utf-8-sig") as fh:
                names = next(csv.reader(fh, delimiter="\t" if src.suffix.lower() == ".tsv" else ","), [])
        header = _header_map(names, src)
        rows = raw_rows
        explicit_root = root is not None and str(root) != ""
    default_methods = parse_methods(methods, ("blur",))

    entries: list[ArchiveEntry] = []
    errors: list[RowError] = []
    seen_path: dict[Path, str] = {}  # -> "row N" (or the file, for folder scans)
    seen_id: dict[str, str] = {}
    seen_out: dict[tuple[str, str], str] = {}
    labels: list[str] = []  # entries' "row N" (or file) labels, for messages
    where = src.name
    for n, raw in enumerate(rows, 1):
        n = 0 if folder_scan else n
        r = _normalise(raw, header)
        v = r.get("video", "")
        vid = r.get("video_id", "")

        def bad(msg: str, kind: str = InvalidInputError.kind) -> None:
            label = f"manifest {where} row {n}" if not folder_scan else f"{where}"
            errors.append(RowError(n, v, vid or _row_id(v, base, n), f"{label} ({v or 'no video'}): {msg}", kind))

        if not v:
            bad("the video column is empty; give the path of a video file or remove the row")
            continue
        given = Path(v).expanduser()
        p = (given if given.is_absolute() else base / given).resolve()
        inside = _inside(p, base)
        if not inside and (explicit_root or not given.is_absolute()):
            bad(f"path escapes the archive root {base} (it resolves to {p}); keep videos inside the root or set ray.archive_root")
            continue
        if any(_inside(p, x) for x in never):
            bad("the video lies inside the output or work folder; inputs and outputs must be kept apart")
            continue
        if not p.exists():
            bad("no such file; fix the path (relative paths start at the archive root) or remove the row")
            continue
        if not p.is_file():
            bad("is not a file")
            continue
        try:
            ms = parse_methods(r.get("methods", ""), default_methods)
        except ConfigError as e:
            bad(str(e), ConfigError.kind)
            continue
        try:
            regions = _row_regions(r.get("fixed_regions", ""))
        except ConfigError as e:
            bad(str(e), ConfigError.kind)
            continue
        d = r.get("donor", "") or donor
        if "swap" in ms and not d:
            bad("method swap needs a consenting donor: fill the donor column or set swap.donor", ConfigError.kind)
            continue
        rel_dir = p.parent.relative_to(base).as_posix() if inside else ""
        rel_dir = "" if rel_dir == "." else rel_dir
        if vid:
            if not _ID_RE.match(vid):
                bad(f"video_id {vid!r} may hold only letters, digits, '.', '_' and '-' (max 128, not starting with '.' or '-')")
                continue
        else:
            vid = _derive_id(rel_dir, p.stem)
            if vid in seen_id:  # "a b.mp4" and "a_b.mp4" derive the same id: tell them apart
                vid = f"{vid[:119]}-{hashlib.sha256(str(p).encode()).hexdigest()[:8]}"
        label = f"row {n}" if not folder_scan else str(p)
        if p in seen_path:
            bad(f"the same video as {seen_path[p]}; list each video once (give several methods in one row)")
            continue
        if vid in seen_id:
            bad(f"video id {vid!r} is already used by {seen_id[vid]}; give the rows distinct video_id values")
            continue
        seen_path[p] = label
        seen_id[vid] = label
        entries.append(ArchiveEntry(n, str(p), rel_dir, vid, r.get("patient", "") or vid, d, ms,
                                    pseudonymous=output_names == "pseudonym", fixed_regions=regions))
        labels.append(label)
    # videos of one folder that share a stem (clip.mp4, clip.mov) would write the same
    # outputs: each of them gets a short hash of its path in its output names (as
    # `deid anonymize` does), whatever the rows' order, so none has to be renamed
    stems = Counter((e.rel_dir, Path(e.video).stem) for e in entries)
    named: list[ArchiveEntry] = []
    for e, label in zip(entries, labels):
        if e.pseudonymous:  # named after their bytes when planned (the same bytes: see accept_plan)
            named.append(e)
            continue
        stem = Path(e.video).stem
        if stems[(e.rel_dir, stem)] > 1:
            e = replace(e, name=f"{stem}-{hashlib.sha256(e.video.encode()).hexdigest()[:8]}")
            log.warning("%s: another video in its folder is named %s too; its outputs are %s.<method>.%s", e.video, stem, e.name, container)
        outs = {m: f"{e.name or stem}.{m}.{container}" for m in e.methods}
        clash = next((m for m in e.methods if (e.rel_dir, outs[m]) in seen_out), None)
        if clash is not None:  # only a file literally named like another's hashed output
            shown = f"{e.rel_dir}/{outs[clash]}" if e.rel_dir else outs[clash]
            where_ = f"manifest {where} row {e.row}" if not folder_scan else where
            errors.append(RowError(e.row, e.video, e.video_id, f"{where_} ({e.video}): would write the same output {shown} as "
                                   f"{seen_out[(e.rel_dir, outs[clash])]}; rename one video or move it to another folder"))
            continue
        for m in e.methods:
            seen_out[(e.rel_dir, outs[m])] = label
        named.append(e)
    entries = named
    # a bad row's id must never name a good row's video (its failed status row would
    # replace the good one's rows): a duplicate gets ".row<N>" appended
    taken = {e.video_id for e in entries}
    unique: list[RowError] = []
    for err in errors:
        vid, k = err.video_id, 1
        while vid in taken:
            vid = f"{err.video_id}.row{err.row}" + (f".{k}" if k > 1 else "")
            k += 1
        taken.add(vid)
        unique.append(RowError(err.row, err.video, vid, err.error, err.kind))
    return Manifest(str(src), str(base), tuple(entries), tuple(unique))


# ============================================================================ segments


@dataclass(frozen=True)
class Segment:
    """Frames ``[start, stop)`` are written; ``context`` more on each side are analysed."""

    index: int
    start: int
    stop: int
    context: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.start < self.stop) or self.context < 0:
            raise ValueError(f"bad segment {self.index}: [{self.start}, {self.stop}) context {self.context}")

    @property
    def frames(self) -> int:
        return self.stop - self.start


def plan_segments(frame_count: int, segment_frames: int, overlap: int = 0) -> tuple[Segment, ...]:
    """Cut ``frame_count`` frames into segments of ``segment_frames`` (0 = one segment).
    A short tail (under a quarter of a segment) joins the previous segment: a tiny
    segment costs a model warm-up and an IDR frame for almost no frames."""
    if frame_count <= 0:
        raise InvalidInputError(f"cannot plan segments for {frame_count} frames")
    if segment_frames <= 0 or frame_count <= segment_frames:
        return (Segment(0, 0, frame_count, overlap),)
    bounds = list(range(0, frame_count, segment_frames)) + [frame_count]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < max(1, segment_frames // 4):
        del bounds[-2]
    return tuple(Segment(k, a, b, overlap) for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])))


def check_segmenting(cfg: Config) -> None:
    """Raise ConfigError unless each segment's context covers the tracker's lookahead."""
    r, t = cfg.ray, cfg.track
    if r.segment_frames and r.segment_overlap < t.lookahead:
        raise ConfigError(
            f"ray.segment_overlap ({r.segment_overlap}) must be >= track.lookahead ({t.lookahead}): the frames at a "
            "segment's edges need that much context for tracking, gap filling and smoothing to place their regions "
            "as a whole-video run would; raise ray.segment_overlap (or set ray.segment_frames=0 for whole videos)"
        )


# ============================================================================ hashing


def _digest(obj: Any) -> str:
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def method_config_hash(cfg: Config, method: str, donor: str = "") -> str:
    """Hash of everything that shapes one method's output: decoding/encoding, detection,
    tracking, the leak audit, and that method's own settings (the swap: its section, the
    donor and the anonymizers used for other faces). Ray resources and evaluation
    settings are left out, so resizing a cluster never redoes finished videos, and adding
    ``mask`` to a job does not redo its ``blur`` outputs."""
    d = cfg.to_dict()
    parts: dict[str, Any] = {k: d[k] for k in ("io", "detect", "track", "audit")}
    parts["audit"] = {k: v for k, v in parts["audit"].items() if k != "text_check"}  # warns, publishes the same
    parts["method"] = method
    anon = {k: v for k, v in d["anonymize"].items() if not k.startswith("fixed_")}
    if method == "swap":
        parts["swap"] = d["swap"]
        parts["anonymize"] = anon
        parts["donor"] = donor or cfg.swap.donor
    else:
        parts["anonymize"] = anon.get(method, {})
    if cfg.anonymize.fixed_regions:  # only when set: outputs made without them keep their hash
        parts["fixed"] = [list(cfg.anonymize.fixed_regions), list(cfg.anonymize.fixed_color)]
    return _digest(parts)


def same_method_config(rec: dict[str, Any], cfg: Config | None, method: str, donor: str = "", want: str = "") -> bool:
    """Whether the audit record ``rec`` of a ``method`` output was made under settings that
    shape that output as ``cfg`` (and ``donor``, an archive row's) do
    (:func:`method_config_hash`: I/O, detection, tracking, leak audit and the method's own
    settings; not the other methods', the evaluation's or Ray's). ``want``: that hash when
    the caller has it. The one check behind ``--skip-existing`` and the archive's recovery
    from audit records.

    The record carries the hash it was made under (``method_config_hash``, paths and donor
    included). An older record without it is compared through its stored configuration;
    a pseudonymous one (``io.output_names=pseudonym``) holds it with the paths left out
    (:func:`deid.audit._without_paths`), so they are left out of ``cfg`` too, and only a
    path setting may then differ unseen. A record without its configuration proves
    nothing."""
    from .audit import _without_paths
    from .config import from_dict

    if rec.get("method") not in (None, method):
        return False
    try:
        want = want or method_config_hash(cfg, method, donor)
        if rec.get("method_config_hash"):
            return rec["method_config_hash"] == want
        stored = rec.get("config")
        if not isinstance(stored, dict):
            return False
        if cfg is not None and cfg.io.output_names == "pseudonym":
            hidden = _without_paths(donor or cfg.swap.donor, "donor")
            return (method_config_hash(from_dict(stored), method, hidden)
                    == method_config_hash(from_dict(_without_paths(cfg.to_dict())), method, hidden))
        return method_config_hash(from_dict(stored), method, donor) == want
    except (ValueError, DeidError, TypeError, KeyError):  # a configuration that no longer loads: not this one
        return False


# ============================================================================ status table


def _status_names() -> list[str]:
    from .metrics.schemas import schema

    return schema("status").names


class StatusTable:
    """One row per (video, method) of an archive, kept in ``<out>/status.parquet``.

    Failed videos that never produced an output have a single ``method = ""`` row
    (the :func:`deid.metrics.schemas.status_rows` convention)."""

    def __init__(self, rows: Iterable[Mapping[str, Any]] = ()):
        self.rows: dict[tuple[str, str], dict[str, Any]] = {}
        for r in rows:
            self.rows[(str(r["video"]), str(r["method"]))] = dict(r)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "StatusTable":
        p = Path(path)
        if not p.is_file():
            return cls()
        from .metrics.schemas import read_table

        return cls(read_table(p, "status").to_pylist())

    def get(self, video: str, method: str) -> dict[str, Any] | None:
        return self.rows.get((video, method))

    def is_done(self, video: str, method: str, input_sha256: str, config_hash: str, output: str | os.PathLike) -> bool:
        """Published with this input and this configuration, and still there — as far as
        the table knows: :func:`plan_video` also asks :func:`record_proves` whether the
        file there is still the one published."""
        r = self.get(video, method)
        return bool(
            r
            and r.get("state") in DONE_STATES
            and r.get("input_sha256") == input_sha256
            and r.get("config_hash") == config_hash
            and Path(output).is_file()
        )

    def replace_video(self, video: str, rows: Iterable[Mapping[str, Any]], keep_methods: Iterable[str] = ()) -> None:
        """Drop the video's rows (except ``keep_methods``, still valid) and add ``rows``."""
        keep = set(keep_methods)
        for k in [k for k in self.rows if k[0] == video and k[1] not in keep]:
            del self.rows[k]
        for r in rows:
            self.rows[(str(r["video"]), str(r["method"]))] = dict(r)

    def videos(self) -> dict[str, str]:
        """video -> overall state: failed if any row failed, else partial if any, else done."""
        out: dict[str, str] = {}
        for (v, _m), r in sorted(self.rows.items()):
            s = str(r.get("state"))
            cur = out.get(v)
            if cur is None or s == "failed" or (s == "partial" and cur == "done"):
                out[v] = s
        return out

    def write(self, path: str | os.PathLike) -> Path:
        from .metrics.schemas import write_table

        names = set(_status_names())
        rows = [{k: v for k, v in r.items() if k in names} for _, r in sorted(self.rows.items())]
        return write_table(rows, path, "status")

    def __len__(self) -> int:
        return len(self.rows)


def _with_output_column(rows: list[dict[str, Any]], outputs: Mapping[str, str]) -> list[dict[str, Any]]:
    if "output_path" in _status_names():
        for r in rows:
            r["output_path"] = str(outputs.get(r["method"], "")) or None
    return rows


def failed_rows(
    video_id: str, input_path: str, error: str, kind: str, *, input_sha256: str = "", config_hash: str = "", timings: Mapping[str, float] | None = None
) -> list[dict[str, Any]]:
    """The single status row of a video that failed before any output existed."""
    from . import __version__
    from .metrics.schemas import status_rows

    res = SimpleNamespace(input=input_path, status="failed", error=error, error_kind=kind, frames_read=0, counts={}, timings=dict(timings or {}), outputs=[])
    return status_rows(res, video=video_id, input_sha256=input_sha256, config_hash=config_hash, deid_version=__version__)


def result_rows(plan: "VideoPlan", res: Any) -> list[dict[str, Any]]:
    """Status rows of a finished (or failed) video: one per method, each with its own hash."""
    from . import __version__
    from .metrics.schemas import status_rows

    rows = status_rows(res, video=plan.entry.video_id, input_sha256=plan.input_sha256, config_hash=plan.todo_hash, deid_version=__version__)
    total = (getattr(res, "timings", None) or {}).get("total")
    if total is not None:  # the stage timings overlap (a segment's total holds its parts): report the work's sum
        for r in rows:
            r["seconds_total"] = float(total)
    if plan.failed and rows and rows[0]["method"] == "" and not plan.todo:
        rows = []  # nothing rendered: the dropped methods' rows say why
    for method, error, kind in plan.failed:
        rows += failed_rows(plan.entry.video_id, plan.entry.video, error, kind, input_sha256=plan.input_sha256)
        rows[-1]["method"] = method
    for r in rows:
        if r["method"] in plan.config_hashes:
            r["config_hash"] = plan.config_hashes[r["method"]]
    return _with_output_column(rows, plan.outputs)


def record_proves(output: str | os.PathLike, input_sha256: str) -> bool:
    """Whether the audit record beside ``output`` is a finished one for this input and
    describes that very file (the output's sha256 it holds, :func:`deid.pipeline.record_describes`):
    a status row alone says only that an output was published there, not that the file
    there now is it (copied over, restored from elsewhere, its record deleted).

    Reads the whole output once. The status table holds no size or mtime of the output
    to check first, and a replacement of the same size (or with its mtime kept,
    ``cp -p``, ``rsync -a``) would pass such a check anyway; the plan task that calls this
    has just read the whole input for its sha256, and the outputs are encoded from it,
    so this is about one more pass of the same order, in parallel over the cluster."""
    from .pipeline import read_record
    from .pipeline import record_proves as proves

    return proves(read_record(output), output, input_sha256)


def recover_from_audit(entry: ArchiveEntry, method: str, output: Path, input_sha256: str, config_hash: str,
                       cfg: Config | None = None) -> dict[str, Any] | None:
    """A status row rebuilt from the audit record beside ``output`` when it proves the
    output is current (same input hash and method config hash, state done/partial);
    None otherwise. This is how a run killed between publishing an output and writing
    the status table is recognised as done. The settings are compared by
    :func:`same_method_config` (``cfg``: the row's configuration, for an older
    pseudonymous record whose stored configuration has its paths left out)."""
    from .pipeline import read_record
    from .pipeline import record_proves as proves

    rec = read_record(output) if output.is_file() else None
    if rec is None or rec.get("status") not in DONE_STATES:
        return None
    if not same_method_config(rec, cfg, method, entry.donor, want=config_hash):
        return None
    if not proves(rec, output, input_sha256):  # another input, or the old video beside a new record
        return None
    from . import __version__

    counts = rec.get("counts") or {}
    leak = rec.get("leak_audit") or {}
    mo = SimpleNamespace(method=method, frames_written=int(rec.get("output", {}).get("frames_written") or 0), leak=leak if "leaks" in leak else {})
    res = SimpleNamespace(input=entry.video, status=rec["status"], error=rec.get("error", ""), error_kind="", frames_read=int(rec.get("frames_read") or 0),
                          counts=counts, timings=rec.get("timings_s") or {}, outputs=[mo])
    from .metrics.schemas import status_rows

    rows = status_rows(res, video=entry.video_id, input_sha256=input_sha256, config_hash=config_hash, deid_version=rec.get("deid_version", __version__),
                       created_unix=int(rec.get("created_unix") or time.time()))
    return _with_output_column(rows, {method: str(output)})[0]


# ============================================================================ planning


def default_work_root(out_dir: str | os.PathLike) -> Path:
    """``.<out name>.deid-work`` beside the output folder: outside it (a scan of the
    outputs never meets a segment), on the same file system, stable across reruns."""
    o = Path(out_dir).expanduser().resolve()
    return o.parent / f".{o.name}.deid-work"


def swap_storage(cfg: Config, work_root: str | os.PathLike) -> Path:
    """Where an archive run keeps its patients' swap models and Ray Train's checkpoints:
    ``ray.storage_path``, default ``<work folder>/swap``."""
    return Path(cfg.ray.storage_path).expanduser().resolve() if cfg.ray.storage_path else Path(work_root) / "swap"


def _check_writable(folder: Path) -> None:
    """Raise :class:`OutputWriteError` when nothing can be written in ``folder`` (a
    read-only mount, a full disk, no permission): said at the start, not after the
    first video has rendered."""
    import tempfile

    from .errors import OutputWriteError

    try:
        fd, name = tempfile.mkstemp(prefix=".deid-write-check-", dir=str(folder))
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise OutputWriteError(f"cannot write to {folder}: {e.strerror or e}") from None


_NAME_KEY = ".name-key"


def swap_name_key(storage: str | os.PathLike, *, create: bool = True) -> bytes | None:
    """The secret that names the patients' swap models in ``storage`` (a random key kept
    there, mode 0600, made on first use; None when there is none and ``create`` is off)."""
    p = Path(storage) / _NAME_KEY
    if not p.is_file():
        if not create:
            return None
        private_mkdir(Path(storage))
        try:
            fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another job made it meanwhile
            pass
        else:
            with os.fdopen(fd, "wb") as fh:
                fh.write(os.urandom(32))
    return p.read_bytes()


def swap_model_name(patient: str, key: str, secret: bytes) -> str:
    """The folder name of a patient's swap model (and its Ray Train run):
    ``swap-<keyed hash of the patient id>-<key>``. Not the id, nor a plain hash of it:
    patient ids are often record numbers (a plain hash of every 8-digit number takes
    minutes), and Ray Train names a folder of its own after the run (under the Ray
    session's ``artifacts/``, readable by every user of the node)."""
    return f"{swap_model_prefix(patient, secret)}{key}"


def swap_model_prefix(patient: str, secret: bytes) -> str:
    import hmac

    return "swap-" + hmac.new(secret, patient.encode(), hashlib.sha256).hexdigest()[:12] + "-"


def _legacy_swap_model_prefix(patient: str) -> str:
    """How deid 0.1 before 2026-12-07 named a patient's model (the id itself): such
    leftovers are still swept."""
    return "swap-" + (re.sub(r"[^A-Za-z0-9._-]+", "_", patient)[:64] or "patient") + "-"


#: how an archive's error names its records folder (deid.records)
_RECORDS_WHAT = "the records folder (--records / ray.records_dir)"
LOCK_FILE = ".lock"
#: the marker file of a work folder deid made (or took over: one it named itself)
WORK_MARK = ".deid-work"
#: segments are always MP4 files, whatever ``io.container``: a Matroska segment's packets
#: carry no decode timestamps, which the stitcher needs; the stitch writes the container
SEGMENT_CONTAINER = "mp4"
#: what deid writes into its work folder, and so all a complete run sweeps there: each
#: video's plan folder (``<video id>-<sha256[:12]>-<key>``), the default swap storage and
#: the evaluation's scratch folder
_PLAN_DIR_RE = re.compile(r"^[A-Za-z0-9._-]+-[0-9a-f]{12}-[A-Za-z0-9]{1,32}$")
_OWN_DIRS = ("swap", "eval")


def private_mkdir(d: str | os.PathLike) -> Path:
    """``mkdir -p`` that makes the folders it creates private (0700). A folder that
    already exists keeps its mode: it may be someone else's."""
    p = Path(d)
    created: list[Path] = []
    q = p
    while not q.exists() and not q.is_symlink() and q != q.parent:
        created.append(q)
        q = q.parent
    p.mkdir(parents=True, exist_ok=True)
    for q in created:
        with contextlib.suppress(OSError):
            os.chmod(q, stat.S_IRWXU)
    return p


def work_folder(out_dir: str | os.PathLike, work_dir: str | os.PathLike | None = None) -> Path:
    """The folder an archive run keeps its private files in (segments, markers, the lock,
    swap models by default). Without ``work_dir`` (``ray.work_dir``): the default
    :func:`default_work_root`. With one: a sub-folder of it that deid names and owns,
    ``<work_dir>/deid-<out name>-<hash of the output path>`` — the folder the user named
    may be shared (scratch space, other jobs' work folders) and deid never chmods,
    sweeps or deletes it or anything in it but that sub-folder."""
    o = Path(out_dir).expanduser().resolve()
    default = default_work_root(o)
    if not work_dir or Path(work_dir).expanduser().resolve() == default:
        return default
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", o.name).strip("._")[:64] or "out"
    return Path(work_dir).expanduser().resolve() / f"deid-{name}-{hashlib.sha256(str(o).encode()).hexdigest()[:8]}"


def check_work_folder(manifest: Manifest, out_dir: str | os.PathLike, work_dir: str | os.PathLike | None = None) -> None:
    """Raise ConfigError for a work folder (``ray.work_dir``) that must not be used: one
    that is, holds or lies inside the archive root, holds an input video, or is or
    holds the output folder. A complete run sweeps its work folder: inputs or outputs
    there would be deleted. The default work folder (beside the output folder, which
    may itself lie inside the archive) is named by deid and holds nothing else."""
    o = Path(out_dir).expanduser().resolve()
    default = default_work_root(o)
    w = Path(work_dir).expanduser().resolve() if work_dir else default
    explicit = w != default
    what = f"the work folder {w}" + (" (ray.work_dir)" if explicit else "")
    fix = "choose a work folder outside the archive and the output folder (ray.work_dir), or leave ray.work_dir empty for the default"
    # deid works in its own sub-folder of a named work_dir: that folder, not the parent the
    # user named (which may hold the output folder, e.g. /scratch and /scratch/results),
    # must stay apart from the outputs
    sub = work_folder(o, work_dir) if explicit else w
    if _inside(o, sub) or (explicit and _inside(sub, o)):
        raise ConfigError(f"{what} is, contains or lies inside the output folder {o}; its files would be taken for "
                          f"deid's leftovers: {fix}")
    root = Path(manifest.root).expanduser().resolve() if manifest.root else None
    if root is not None and (_inside(root, w) or (explicit and _inside(w, root))):
        rel = "is" if w == root else ("contains" if _inside(root, w) else "lies inside")
        raise ConfigError(
            f"{what} {rel} the archive root {root} (the folder the manifest's videos are in, or ray.archive_root); "
            f"inputs and deid's private files must be kept apart: {fix}"
        )
    # a refused row's file in the folder the user named is an original too (the default
    # folder's refused rows are deid's own segments)
    for v in [e.video for e in manifest.entries] + [err.video for err in manifest.errors if err.video and explicit]:
        p = Path(v).expanduser()
        p = p if p.is_absolute() or root is None else root / p
        if _inside(p.resolve(), w):
            raise ConfigError(f"{what} contains the input video {p}: {fix}")


@dataclass(frozen=True, eq=False)
class VideoPlan:
    """What to do for one video: methods still to render, where, in which segments."""

    entry: ArchiveEntry
    info: VideoInfo
    input_sha256: str
    config_hashes: dict[str, str]  # method -> method_config_hash (every method of the row)
    outputs: dict[str, str]  # method -> final output path (every method of the row)
    todo: tuple[str, ...]  # methods to render now
    done: tuple[str, ...]  # methods already current (skipped)
    work_dir: str
    segments: tuple[Segment, ...]
    pts_origin: int | None
    recovered: tuple[dict[str, Any], ...] = ()  # status rows rebuilt from audit records
    swap_model: str = ""  # the patient's swap model folder (set once it is trained)
    timings: dict[str, float] = field(default_factory=dict)
    failed: tuple[tuple[str, str, str], ...] = ()  # (method, error, kind): dropped before rendering

    @property
    def todo_hash(self) -> str:
        return _digest(sorted((m, self.config_hashes[m]) for m in self.todo)) if self.todo else ""

    def with_swap_model(self, path: str) -> "VideoPlan":
        return replace(self, swap_model=str(path))

    def without_method(self, method: str, error: str, kind: str = "error") -> "VideoPlan":
        """The plan with ``method`` dropped (e.g. the patient's swap model could not be
        trained): the other methods still run, ``method`` gets a failed status row."""
        return replace(self, todo=tuple(m for m in self.todo if m != method), failed=self.failed + ((method, error, kind),))


def plan_video(
    entry: ArchiveEntry,
    cfg: Config,
    out_dir: str | os.PathLike,
    work_root: str | os.PathLike,
    status: StatusTable,
    *,
    overwrite: bool = False,
) -> VideoPlan:
    """Probe and hash ``entry``'s video and decide what to render (see the module doc).
    Raises a :class:`DeidError` for a video that cannot run (not a video, output would
    replace a file this job did not write, ...)."""
    from .io import check_output_path, probe
    from .pipeline import audit_path, sha256_file

    cfg = entry_config(cfg, entry)
    t0 = time.perf_counter()
    info = probe(entry.video)
    t_probe = time.perf_counter() - t0
    t0 = time.perf_counter()
    sha = sha256_file(entry.video)
    t_hash = time.perf_counter() - t0
    outs = {m: p for m, p in entry.output_paths(out_dir, cfg.io.container, sha).items()}
    hashes = {m: method_config_hash(cfg, m, entry.donor) for m in entry.methods}
    todo: list[str] = []
    done: list[str] = []
    recovered: list[dict[str, Any]] = []
    for m in entry.methods:
        check_output_path(outs[m], [entry.video], overwrite=True)  # never over an input, whatever the flags
        if status.is_done(entry.video_id, m, sha, hashes[m], outs[m]) and record_proves(outs[m], sha):
            done.append(m)
            continue
        row = recover_from_audit(entry, m, outs[m], sha, hashes[m], cfg)
        if row is not None:
            done.append(m)
            recovered.append(row)
            continue
        if outs[m].exists() and not overwrite and not audit_path(outs[m]).is_file():
            if not _published_here(status, entry.video_id, m, outs[m]):
                raise OutputExistsError(
                    f"{outs[m]}: exists and was not written by a deid archive run (no audit record beside it); "
                    "move it away or rerun with --overwrite"
                )
            # the status table says a run of this folder published it, and its record is gone
            log.warning("%s: its audit record is missing; rendering it again", outs[m])
        elif outs[m].exists() and status.is_done(entry.video_id, m, sha, hashes[m], outs[m]):
            log.warning("%s: not the file its audit record describes (replaced since it was published); rendering it again", outs[m])
        todo.append(m)
    segs: tuple[Segment, ...] = ()
    origin: int | None = None
    work = ""
    if todo:
        seg_frames = cfg.ray.segment_frames if info.frame_count_exact else 0
        if cfg.track.fail_closed == "drop" and cfg.io.timing == "cfr":
            # regular timestamps count the frames written before: a segment cannot know
            # how many earlier segments dropped, so such a video is rendered whole
            seg_frames = 0
        segs = plan_segments(info.frame_count, seg_frames, cfg.ray.segment_overlap)
        if cfg.io.timing == "keep":
            origin = info.start_pts  # the probe's scan found it: no second pass over the file
        key = _digest([sorted((m, hashes[m]) for m in todo), cfg.ray.segment_frames, cfg.ray.segment_overlap])[:10]
        work = str(Path(work_root) / f"{entry.video_id}-{sha[:12]}-{key}")
    return VideoPlan(
        entry, info, sha, hashes, {m: str(p) for m, p in outs.items()}, tuple(todo), tuple(done), work, segs, origin,
        tuple(recovered), timings={"probe": round(t_probe, 4), "hash": round(t_hash, 4)},
    )


def _published_here(status: StatusTable, video: str, method: str, output: Path) -> bool:
    """The status table has ``output`` as this video's published ``method`` output."""
    r = status.get(video, method)
    return bool(r and r.get("state") in DONE_STATES and r.get("output_path") and Path(str(r["output_path"])) == output)


# ============================================================================ segments: render


def render_cost(plan: VideoPlan) -> int:
    """A video's rendering work in frame-passes: the frames its segments analyse (context
    included; counted on both sides of every segment, so a little high at the video's
    ends) times the methods still to render. The models run on every frame whatever its
    size, so frames, not pixels, set the cost. An estimate for ordering only: a resumed
    run's finished segments are counted too."""
    frames = sum(s.frames + 2 * s.context for s in plan.segments)
    return frames * max(1, len(plan.todo))


def render_order(plans: Mapping[str, VideoPlan]) -> list[str]:
    """Video ids in the order their segments go to the render pool: the most work first
    (longest-processing-time first), ties by id. A pool of k workers that takes whole
    videos then ends within 4/3 of the best possible finish (Graham's bound) instead of
    leaving a long video for last while the other workers idle; with short segments the
    order matters less, and each video's segments stay together so it is finalized as
    soon as they are done."""
    return _most_work_first({v: render_cost(p) for v, p in plans.items()})


def _most_work_first(work: Mapping[str, int]) -> list[str]:
    """Ids by work, largest first, ties by id (longest-processing-time first)."""
    return sorted(work, key=lambda v: (-work[v], v))


def evaluation_order(jobs: Mapping[str, tuple[int, int]]) -> list[str]:
    """Video ids in the order their evaluations go to the pose and identity pools: the
    most work first, ties by id (as :func:`render_order`). ``jobs`` maps a video id to
    ``(frames, outputs)``: pose runs on the original and on every output, and the
    identity stage embeds the original's faces and every output's at the same places, so
    the work is ``frames x (1 + outputs)``. With one video in flight per actor, a long
    video handed out last would otherwise run alone while the other actors idle."""
    return _most_work_first({v: max(0, int(f)) * (1 + max(0, int(n))) for v, (f, n) in jobs.items()})


def segment_file(work_dir: str | os.PathLike, index: int, method: str, container: str = SEGMENT_CONTAINER) -> Path:
    return Path(work_dir) / f"seg-{index:05d}.{method}.{container}"


def _marker(work_dir: str | os.PathLike, index: int) -> Path:
    return Path(work_dir) / f"seg-{index:05d}.json"


def _book_file(work_dir: str | os.PathLike, index: int) -> Path:
    return Path(work_dir) / f"seg-{index:05d}.book.pkl"


@dataclass
class SegmentOutcome:
    """What rendering one segment produced; small (it travels through the object store)."""

    video_id: str
    index: int
    start: int
    stop: int
    ok: bool = True
    error: str = ""
    error_kind: str = ""
    frames_read: int = 0
    written: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)  # anonymizer stats per method
    partial: bool = False
    partial_error: str = ""
    timings: dict[str, float] = field(default_factory=dict)
    last_good_frame: int = -1  # a failed segment's stream broke after this frame of the video (-1: not a decode error)
    resumed: bool = False

    def to_json(self) -> str:
        return json.dumps(asdict(self), default=str)

    @classmethod
    def from_json(cls, text: str) -> "SegmentOutcome":
        return cls(**json.loads(text))


def _fingerprint(plan: VideoPlan, seg: Segment) -> dict[str, Any]:
    return {"sha": plan.input_sha256, "todo": plan.todo_hash, "start": seg.start, "stop": seg.stop, "context": seg.context}


def _resumable(plan: VideoPlan, seg: Segment, container: str = SEGMENT_CONTAINER) -> SegmentOutcome | None:
    mk = _marker(plan.work_dir, seg.index)
    if not mk.is_file():
        return None
    try:
        data = json.loads(mk.read_text())
        if data.get("fingerprint") != _fingerprint(plan, seg):
            return None
        out = SegmentOutcome(**data["outcome"])
    except (OSError, ValueError, TypeError, KeyError):
        return None
    if not out.ok or not _book_file(plan.work_dir, seg.index).is_file():
        return None
    for m in plan.todo:
        if out.written.get(m, 0) and not segment_file(plan.work_dir, seg.index, m, container).is_file():
            return None
    out.resumed = True
    return out


def finished_segment(plan: VideoPlan, index: int, container: str = "") -> SegmentOutcome | None:
    """The outcome of segment ``index`` when an earlier (killed) run already rendered it
    for this plan (its marker and files are in the work folder); None otherwise.
    ``container`` (``io.container``) is accepted and ignored: segments are always
    :data:`SEGMENT_CONTAINER` files."""
    try:
        return _resumable(plan, plan.segments[index])
    except OSError:
        return None


def render_planned_segment(
    plan: VideoPlan,
    index: int,
    cfg: Config,
    comp: Any,
    *,
    progress: Callable[[int], None] | None = None,
) -> SegmentOutcome:
    """Render segment ``index`` of ``plan`` into its work folder; never raises for a bad
    video (the error travels in the outcome). A segment already rendered by an earlier,
    killed run (its marker matches) is returned as is, without rendering."""
    from .io import atomic_output
    from .pipeline import expected_frames, render_segment
    from .types import Timings

    cfg = entry_config(cfg, plan.entry)  # the row's own fixed regions
    seg = plan.segments[index]
    container = SEGMENT_CONTAINER  # the stitch writes io.container
    out = SegmentOutcome(plan.entry.video_id, seg.index, seg.start, seg.stop)
    try:
        private_mkdir(plan.work_dir)
        again = _resumable(plan, seg, container)
        if again is not None:
            return again
        for m in plan.todo:
            remove_partials_of(segment_file(plan.work_dir, seg.index, m, container))
        timings = Timings()
        t0 = time.perf_counter()
        files = {m: segment_file(plan.work_dir, seg.index, m, container) for m in plan.todo}
        with contextlib.ExitStack() as stack:
            # keep_partial: a segment that lies wholly after a corrupt stretch decodes
            # nothing and writes no file; fail_closed=drop: a segment whose every frame is
            # dropped writes none either. It then adds no frames to the stitched video
            # (the frame counts are still checked below, against expected_frames)
            empty_ok = cfg.io.on_corrupt == "keep_partial" or cfg.track.fail_closed == "drop"
            tmp = {m: stack.enter_context(atomic_output(p, allow_empty=empty_ok)) for m, p in files.items()}
            r = render_segment(
                plan.entry.video, plan.info, tmp, cfg, comp, start=seg.start, stop=seg.stop, context=seg.context,
                timings=timings, progress=progress, pts_origin=plan.pts_origin,
            )
            if not r.partial and r.frames_read != seg.frames:
                raise VideoDecodeError(f"{plan.entry.video}: segment {seg.index} [{seg.start}, {seg.stop}) decoded {r.frames_read} of {seg.frames} frames")
            want = expected_frames(r.frames_read, r.counts, cfg)
            for m, n in r.written.items():
                if n != want:
                    raise DeidError(f"{plan.entry.video}: segment {seg.index} wrote {n} frames for {m}, expected {want}")
        out.frames_read = r.frames_read
        out.written = {m: int(n) for m, n in r.written.items()}
        out.counts = {k: int(v) for k, v in r.counts.items()}
        out.stats = {m: _jsonable(a.stats()) for m, a in comp.anonymizers.items() if m in plan.todo and hasattr(a, "stats")}
        out.partial, out.partial_error = bool(r.partial), str(r.error or "")
        timings.add("segment", time.perf_counter() - t0)
        out.timings = {k: round(v, 4) for k, v in timings.seconds.items()}
        _write_atomic_bytes(_book_file(plan.work_dir, seg.index), pickle.dumps({"rows": r.book.rows, "sampled": r.book.sampled}, protocol=pickle.HIGHEST_PROTOCOL))
        _write_atomic_bytes(_marker(plan.work_dir, seg.index), json.dumps({"fingerprint": _fingerprint(plan, seg), "outcome": asdict(out)}, default=str).encode())
    except DeidError as e:
        out.ok, out.error, out.error_kind = False, str(e), e.kind
        if getattr(e, "last_good_frame", None) is not None:  # a stream corrupt part-way
            out.last_good_frame = int(e.last_good_frame)
    except Exception as e:  # noqa: BLE001 - one bad segment must never kill the run
        full = storage_error(e, f"{plan.entry.video}: segment {index}: cannot write to the work folder {plan.work_dir}")
        if full is not None:
            out.ok, out.error, out.error_kind = False, str(full), full.kind
        else:
            log.exception("unexpected error rendering %s segment %d", plan.entry.video, index)
            out.ok, out.error, out.error_kind = False, f"{plan.entry.video}: segment {index}: unexpected {type(e).__name__}: {e}", "internal"
    return out


def _jsonable(d: Any) -> Any:
    return json.loads(json.dumps(d, default=str))


def _write_atomic_bytes(path: Path, data: bytes) -> None:
    from .io import atomic_output

    with atomic_output(path) as tmp:
        Path(tmp).write_bytes(data)


def remove_partials_of(final: str | os.PathLike) -> list[Path]:
    """Delete temporaries of *this* output only (``.<name>.partial-*``): other videos
    in the same folder may be writing theirs right now."""
    from .io.atomic import PARTIAL_MARK

    f = Path(final)
    removed = []
    if f.parent.is_dir():
        for p in f.parent.glob(f".{glob_escape(f.name)}{PARTIAL_MARK}*"):
            with contextlib.suppress(OSError):
                p.unlink()
                removed.append(p)
    return removed


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


# ============================================================================ finalize


def merge_stats(parts: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Anonymizer statistics of several segments as one video's: counts add up,
    ``min_*`` / ``*_min_distance`` take the minimum; settings and model facts
    (``train_*``, ``*_every``, ``*_interval``, strings) keep the first value."""
    out: dict[str, Any] = {}
    for p in parts:
        for k, v in p.items():
            if k not in out or out[k] is None:
                out[k] = dict(v) if isinstance(v, Mapping) else v
            elif isinstance(v, Mapping) and isinstance(out[k], Mapping):
                out[k] = merge_stats([out[k], v])
            elif isinstance(v, bool) or not isinstance(v, (int, float)) or not isinstance(out[k], (int, float)):
                continue
            elif "min" in k:
                out[k] = min(out[k], v) if v is not None else out[k]
            elif k.startswith(("train_", "max_")) or k.endswith(("_every", "_interval", "_max")):
                continue  # settings and facts of the model, the same in every segment
            else:
                out[k] = out[k] + v
    return out


class _StatsOnly:
    """Stands in for an anonymizer in :func:`finalize_outputs`: only its stats are read."""

    def __init__(self, name: str, stats: Mapping[str, Any]):
        self.name = name
        self._stats = dict(stats)

    def stats(self) -> dict[str, Any]:
        return dict(self._stats)


def finalize_video(
    plan: VideoPlan,
    outcomes: Sequence[SegmentOutcome],
    cfg: Config,
    identity: Any = None,
    *,
    keep_work: bool = False,
    on_step: Callable[[str], None] | None = None,
):
    """Stitch, verify, leak-audit, write audit records and publish one video's outputs
    (see the module doc). Returns ``(VideoResult, status rows)``; never raises for a
    bad video. ``identity``: the leak audit's identity encoder (built from
    ``cfg.audit.identity_backend`` when None and the audit is on). ``on_step`` is
    called with ``"stitched"`` (temporaries complete, nothing published yet) and
    ``"published"``."""
    from .io import atomic_output
    from .io.concat import concat_segments
    from .pipeline import Components, VideoResult, finalize_outputs
    from .types import Timings

    cfg = entry_config(cfg, plan.entry)  # the audit record shows the row's own fixed regions
    src = plan.entry.video
    res = VideoResult(input=src, status="failed", info=plan.info)
    work_s = sum(plan.timings.values()) + sum(o.timings.get("segment", 0.0) for o in outcomes)
    timings = Timings(carried=work_s)
    for k, v in plan.timings.items():
        timings.add(k, v)
    container = cfg.io.container
    try:
        got = sorted(outcomes, key=lambda o: o.index)
        if [o.index for o in got] != list(range(len(plan.segments))):
            raise DeidError(f"{src}: got segments {[o.index for o in got]}, expected 0..{len(plan.segments) - 1}; rerun the job")
        for o in got:
            for k, v in o.timings.items():
                timings.add(k, v)
        failed = [o for o in got if not o.ok]
        res.frames_read = sum(o.frames_read for o in got)
        if failed:
            res.error, res.error_kind = failed[0].error, failed[0].error_kind or "error"
            good = [o.last_good_frame for o in failed if o.last_good_frame >= 0]
            if good:  # a stream corrupt part-way: the frames before the damage were read
                res.frames_read = min(good) + 1
            raise _Handled()
        counts: dict[str, int] = {}
        for o in got:
            for k, v in o.counts.items():
                counts[k] = counts.get(k, 0) + int(v)
        res.counts = counts
        partial = [o for o in got if o.partial]
        if partial:
            res.status, res.error, res.error_kind = "partial", partial[0].partial_error, "partial"
        res.outputs_written = {m: sum(o.written.get(m, 0) for o in got) for m in plan.todo}
        from .audit import FrameRows

        rows = FrameRows()
        sampled: dict[int, Any] = {}
        for o in got:
            with open(_book_file(plan.work_dir, o.index), "rb") as fh:
                b = pickle.load(fh)  # our own file in our private work folder
            rows.extend(b["rows"])
            sampled.update(b["sampled"])
        book = SimpleNamespace(rows=rows, sampled=sampled)
        if identity is None and cfg.audit.leak_check:
            from .registry import IDENTITY_ENCODERS

            identity = IDENTITY_ENCODERS.create(cfg.audit.identity_backend)
        anons = {m: _StatsOnly(m, merge_stats([o.stats.get(m, {}) for o in got])) for m in plan.todo}
        anons = {m: a if a._stats else _NoStats() for m, a in anons.items()}
        comp = Components(cfg, detector=None, anonymizers=anons, identity=identity)
        outs = {m: Path(plan.outputs[m]) for m in plan.todo}
        for p in outs.values():
            remove_partials_of(p)
        with contextlib.ExitStack() as stack:
            tmp = {m: stack.enter_context(atomic_output(p)) for m, p in outs.items()}
            t0 = time.perf_counter()
            for m in plan.todo:
                parts = [segment_file(plan.work_dir, o.index, m) for o in got if o.written.get(m, 0) > 0]
                if not parts:
                    raise DeidError(f"{src}: no frames were written for {m}")
                concat_segments(parts, tmp[m], audio_from=src if cfg.io.keep_audio else None, audio_offset=plan.info.start_time,
                                container_format="matroska" if container == "mkv" else "mp4")
            timings.add("stitch", time.perf_counter() - t0)
            if on_step:
                on_step("stitched")
            finalize_outputs(src, tmp, outs, res, cfg, comp, book, timings, True, input_sha256=plan.input_sha256 or None,
                             method_hashes=plan.config_hashes)
        if on_step:
            on_step("published")
        if not keep_work:
            shutil.rmtree(plan.work_dir, ignore_errors=True)
    except _Handled:
        res.status = "failed"
    except DeidError as e:
        res.status, res.error, res.error_kind = "failed", str(e), e.kind
    except Exception as e:  # noqa: BLE001 - one bad video must never kill the run
        full = storage_error(e, f"{src}: cannot write its outputs")
        if full is not None:
            res.status, res.error, res.error_kind = "failed", str(full), full.kind
        else:
            log.exception("unexpected error finalizing %s", src)
            res.status, res.error, res.error_kind = "failed", f"{src}: unexpected {type(e).__name__}: {e}", "internal"
    if res.status == "failed":
        res.outputs = []
        if not keep_work:
            shutil.rmtree(plan.work_dir, ignore_errors=True)
    # seconds of work spent on this video, wherever it ran: planning, every segment, this step
    timings.add("total", timings.elapsed())
    res.timings = {k: round(v, 4) for k, v in timings.seconds.items()}
    return res, result_rows(plan, res)


class _Handled(Exception):
    """A failure already recorded in the result."""


class _NoStats:
    name = "none"


# ============================================================================ progress


@dataclass
class ArchiveProgress:
    """Counts for the periodic summary line of an archive run."""

    total: int
    done: int = 0
    failed: int = 0
    skipped: int = 0
    frames: int = 0
    t0: float = field(default_factory=time.monotonic)
    last_line: float = 0.0

    def video(self, state: str) -> None:
        if state in DONE_STATES:
            self.done += 1
        elif state == "skipped":
            self.skipped += 1
        else:
            self.failed += 1

    def add_frames(self, n: int) -> None:
        self.frames += int(n)

    @property
    def finished(self) -> int:
        return self.done + self.failed + self.skipped

    def line(self, now: float | None = None) -> str:
        el = max(1e-9, (now if now is not None else time.monotonic()) - self.t0)
        return (
            f"archive: {self.finished}/{self.total} videos ({self.done} done, {self.failed} failed, {self.skipped} skipped), "
            f"{self.frames} frames rendered at {self.frames / el:.1f} frames/s, {el:.0f} s"
        )

    def due(self, every_s: float, now: float | None = None) -> bool:
        """True at most once per ``every_s`` seconds (0 = never)."""
        if every_s <= 0:
            return False
        now = now if now is not None else time.monotonic()
        if now - self.last_line >= every_s:
            self.last_line = now
            return True
        return False


# ============================================================================ one run


class ArchiveRun:
    """The bookkeeping of one archive run, whatever schedules the work.

    The in-process runner (:func:`run_archive_in_process`) and the Ray driver
    (``ray_jobs.deidentify``) feed it the same events — a plan (or a planning error), each
    segment's outcome, each video's final result — and it keeps the status table, the
    progress counts and the list of videos whose segments are all in::

        run = ArchiveRun(manifest, cfg, out_dir); run.begin()
        for entry in manifest.entries:
            if run.should_plan(entry):
                segments = run.accept_plan(entry, plan_video(...))      # or (entry, None, error)
                ...  # render; run.accept_segment(outcome) returns the plan when complete
                run.accept_result(plan, *finalize_video(plan, outcomes, cfg))
        run.finish()
    """

    def __init__(
        self,
        manifest: Manifest,
        cfg: Config,
        out_dir: str | os.PathLike,
        *,
        work_root: str | os.PathLike | None = None,
        overwrite: bool = False,
        status_every_s: float = 2.0,
        echo: Callable[[str], None] | None = None,
    ):
        self.manifest = manifest
        self.cfg = cfg
        self.out_dir = Path(out_dir).expanduser().resolve()
        # before anything is created: a work folder over inputs or outputs is refused
        check_work_folder(manifest, self.out_dir, work_root)
        #: the folder named by ``work_root`` (``ray.work_dir``), when one is: never touched
        self.work_parent = Path(work_root).expanduser().resolve() if work_root else None
        self.work_root = work_folder(self.out_dir, work_root)
        if self.work_root == default_work_root(self.out_dir):
            self.work_parent = None
        self.overwrite = overwrite
        from .records import records_folder

        #: status.parquet, the evaluation and the report (beside the outputs, not among
        #: them, under io.output_names=pseudonym): deid.records
        self.records_dir = records_folder(self.out_dir, cfg.io.output_names, cfg.ray.records_dir, _RECORDS_WHAT)
        self.status_path = self.records_dir / STATUS_FILE
        self.status = StatusTable()
        self.progress = ArchiveProgress(total=len(manifest))
        self.plans: dict[str, VideoPlan] = {}
        self.outcomes: dict[str, dict[int, SegmentOutcome]] = {}
        self._pseudonyms: dict[str, str] = {}  # output path -> the video first planned to write it (io.output_names=pseudonym)
        self.states: dict[str, str] = {}  # video -> state reached in this run (done/partial/failed/skipped)
        self.status_every_s = status_every_s
        self.echo = echo
        self._dirty = False
        self._last_write = 0.0
        self._lock: Any = None

    # ----------------------------------------------------------------- start / end
    def begin(self) -> None:
        """Create folders, load the previous status table, delete temporaries a killed run
        left in the output folders, and record the manifest's bad rows."""
        check_segmenting(self.cfg)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._claim_work_root()
        self._acquire_lock()
        try:
            self._begin_locked()
        except BaseException:  # nothing started: the next run must not find the folder locked
            self._release_lock()
            self._drop_work_root()
            raise

    def _begin_locked(self) -> None:
        from .records import make_records_folder

        make_records_folder(self.records_dir, self.cfg.io.output_names)
        for d in dict.fromkeys((self.out_dir, self.records_dir)):
            _check_writable(d)  # before any video is rendered, not when the first one is published
        self.status = StatusTable.load(self.status_path)
        legacy = self.out_dir / STATUS_FILE
        if legacy != self.status_path and legacy.is_file():
            # left by a run from before the records moved out of the output folder under
            # io.output_names=pseudonym (its outputs are recognised from their audit records)
            msg = (f"{legacy} (an earlier run's status table) names the inputs and lies in the output folder; this run keeps "
                   f"its status in {self.status_path}: delete or move the old one before sharing {self.out_dir}")
            if self.echo is not None:
                self.echo(f"archive: warning: {msg}")
            else:
                log.warning(msg)
        from .io import remove_stale_partials

        for d in self.output_dirs():
            for p in remove_stale_partials(d):
                log.info("removed a temporary left by an interrupted run: %s", p)
        for err in self.manifest.errors:
            self.status.replace_video(err.video_id, failed_rows(err.video_id, err.video, err.error, err.kind))
            self._finished(err.video_id, "failed", err.error)
        self.flush(force=True)

    def output_dirs(self) -> set[Path]:
        """The folders this run's outputs go to (the output folder and the rows' sub-folders)."""
        return {self.out_dir} | {e.output_dir(self.out_dir) for e in self.manifest.entries}

    def finish(self, release: bool = True) -> None:
        """Write the status table; when every video of the manifest reached an end state
        in this run, delete what a killed earlier run left in the work folder (its
        segments, and swap models of this manifest's patients with their face crops);
        release the output folder's lock (unless ``release`` is False: a job that goes on
        to evaluate the outputs keeps it, and calls :meth:`release` once its evaluation
        and report are written, so no second job of the folder sweeps the evaluation's
        scratch folder or replaces the outputs being evaluated). An interrupted run keeps
        its segments and models for the rerun."""
        try:
            self.flush(force=True)
            if self.complete:
                self._sweep()
        except BaseException:
            self.release()
            raise
        if release:
            self.release()

    def release(self) -> None:
        """Release the output folder's lock and remove the work folder when nothing but
        its marker is left (unfinished videos keep their segments). Idempotent."""
        self._release_lock()
        self._drop_work_root()

    def _claim_work_root(self) -> None:
        """Create the work folder (private, 0700) with its marker, or take over the one an
        earlier run left. Its name is deid's (:func:`work_folder`): the folder the user
        named (``ray.work_dir``) is only created when missing, never changed."""
        w = self.work_root
        if w.is_symlink():
            raise ConfigError(f"the work folder {w} is a symbolic link; deid sweeps its work folder, so it must be a folder of its own: remove the link")
        if self.work_parent is not None:
            self.work_parent.mkdir(parents=True, exist_ok=True)
        private_mkdir(w)
        with contextlib.suppress(OSError):
            os.chmod(w, stat.S_IRWXU)  # deid's own folder (made by an older deid, or remade by a worker)
        if not (w / WORK_MARK).is_file():
            self._mark_work_root()

    def _mark_work_root(self) -> None:
        (self.work_root / WORK_MARK).write_text(json.dumps({"deid_work_folder": True, "out_dir": str(self.out_dir)}) + "\n")

    def _drop_work_root(self) -> None:
        """Remove the work folder when nothing but its marker is left."""
        w = self.work_root
        try:
            if not w.is_dir() or w.is_symlink() or any(p.name != WORK_MARK for p in w.iterdir()):
                return
            (w / WORK_MARK).unlink(missing_ok=True)
            w.rmdir()
        except OSError:
            if w.is_dir() and not (w / WORK_MARK).exists():  # something arrived meanwhile: keep it marked
                with contextlib.suppress(OSError):
                    self._mark_work_root()

    @property
    def complete(self) -> bool:
        """Every video of the manifest has an end state (done, partial, failed, skipped)."""
        return all(e.video_id in self.states for e in self.manifest.entries) and all(
            err.video_id in self.states for err in self.manifest.errors
        )

    def _sweep(self) -> None:
        """Private leftovers of earlier, killed runs: work folders of plans that no longer
        match (other settings, other inputs) and swap models never deleted (SIGKILL, node
        loss). Only under the lock, so no other job of this output folder is using them.
        Only in deid's own (marked) work folder, and only what deid writes there (plan
        folders, the default swap storage, the evaluation's folder): anything else is
        left alone."""
        storage = swap_storage(self.cfg, self.work_root)
        keep = {storage.resolve()} if self.cfg.swap.keep_model else set()
        w = self.work_root
        if w.is_dir() and not w.is_symlink() and (w / WORK_MARK).is_file():
            for p in w.iterdir():
                if p.name in (LOCK_FILE, WORK_MARK) or p.resolve() in keep:
                    continue
                if not (p.is_dir() and not p.is_symlink() and (p.name in _OWN_DIRS or _PLAN_DIR_RE.match(p.name))):
                    log.warning("left in the work folder (not deid's): %s", p)
                    continue
                log.info("removing a killed run's leftovers: %s", p)
                shutil.rmtree(p, ignore_errors=True)
        if self.cfg.swap.keep_model or not storage.is_dir():
            return
        secret = swap_name_key(storage, create=False)
        prefixes = tuple(_legacy_swap_model_prefix(e.patient) for e in self.manifest.entries)
        if secret:
            prefixes += tuple(swap_model_prefix(e.patient, secret) for e in self.manifest.entries)
        for sub in ("models", "ray_train"):
            d = storage / sub
            if not prefixes or not d.is_dir():
                continue
            for p in d.iterdir():
                if p.name.startswith(prefixes):
                    log.warning("deleting a swap model a killed run left behind: %s", p)
                    shutil.rmtree(p, ignore_errors=True)

    def _acquire_lock(self) -> None:
        """One job per output folder: an exclusive lock on ``<work folder>/.lock``, held
        until :meth:`finish` or, for a job that evaluates, :meth:`release` (the OS drops
        it if the process dies)."""
        import fcntl
        import socket

        path = self.work_root / LOCK_FILE
        fh = open(path, "a+")
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            holder = fh.read().strip() or "another process"
            fh.close()
            raise ConfigError(
                f"another deid archive job is writing to {self.out_dir} ({holder}; lock {path}); "
                "run one job per output folder at a time, or wait for it to finish"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"pid {os.getpid()} on {socket.gethostname()}")
        fh.flush()
        self._lock = fh

    def _release_lock(self) -> None:
        fh, self._lock = self._lock, None
        if fh is None:
            return
        with contextlib.suppress(OSError):
            (self.work_root / LOCK_FILE).unlink()
        fh.close()

    # ----------------------------------------------------------------- events
    def should_plan(self, entry: ArchiveEntry) -> bool:
        """False for a video that failed before when ``ray.retry_failed`` is off."""
        if self.cfg.ray.retry_failed:
            return True
        rows = [r for (v, _m), r in self.status.rows.items() if v == entry.video_id]
        if rows and all(r.get("state") == "failed" for r in rows):
            self._finished(entry.video_id, "skipped", "failed before; ray.retry_failed is off")
            return False
        return True

    def accept_plan(self, entry: ArchiveEntry, plan: VideoPlan | None, error: BaseException | None = None) -> list[int]:
        """Record a plan (or the error that stopped planning); returns the segment
        indices to render (empty when nothing is left to do for this video)."""
        vid = entry.video_id
        if plan is None:
            msg = str(error) if error is not None else f"{entry.video}: could not be planned"
            kind = getattr(error, "kind", "internal")
            if error is not None and not isinstance(error, DeidError):
                msg = f"{entry.video}: unexpected {type(error).__name__}: {error}"
            rows = failed_rows(vid, entry.video, msg, kind)
            if getattr(error, "last_good_frame", None) is not None:  # a stream corrupt part-way: the frames read before
                for r in rows:
                    r["frames_read"] = int(error.last_good_frame) + 1
            self.status.replace_video(vid, rows)
            self._finished(vid, "failed", msg)
            return []
        if entry.pseudonymous:  # rows with the same bytes would write the same outputs: the first one does
            owner = {m: self._pseudonyms.setdefault(str(p), entry.video) for m, p in plan.outputs.items()}
            shared = [m for m, v in owner.items() if v != entry.video]
            if shared:
                note = f"the same bytes as {owner[shared[0]]}, whose {'/'.join(shared)} output(s) it shares"
                if self.echo:
                    self.echo(f"archive: {vid}: {note}")
                plan = replace(plan, todo=tuple(m for m in plan.todo if m not in shared))
                if not plan.todo:
                    self._finished(vid, "skipped", note)
                    return []
        if plan.recovered:
            self.status.replace_video(vid, plan.recovered, keep_methods=[m for m in plan.done])
            self._dirty = True
        if not plan.todo:
            self._finished(vid, "skipped", "already done with this configuration")
            return []
        self.plans[vid] = plan
        self.outcomes[vid] = {}
        # worker-death counters (``seg-N.attempts``) count this run's attempts only: a
        # segment a stopped job left half-done is not a segment that kills its workers
        for p in Path(plan.work_dir).glob("seg-*.attempts") if plan.work_dir else ():
            with contextlib.suppress(OSError):
                p.unlink()
        return list(range(len(plan.segments)))

    def accept_segment(self, outcome: SegmentOutcome) -> VideoPlan | None:
        """Record one segment; returns the video's plan once all its segments are in."""
        vid = outcome.video_id
        plan = self.plans.get(vid)
        if plan is None:
            log.warning("segment %d of unknown video %s ignored", outcome.index, vid)
            return None
        have = self.outcomes[vid]
        if outcome.index in have:  # a retried task reporting twice: keep the first
            return None
        have[outcome.index] = outcome
        if outcome.ok and not outcome.resumed:
            self.progress.add_frames(outcome.frames_read)
        return plan if len(have) == len(plan.segments) else None

    def segment_outcomes(self, video_id: str) -> list[SegmentOutcome]:
        return [o for _, o in sorted(self.outcomes.get(video_id, {}).items())]

    def accept_result(self, plan: VideoPlan, res: Any, rows: Sequence[Mapping[str, Any]]) -> None:
        vid = plan.entry.video_id
        self.status.replace_video(vid, rows, keep_methods=plan.done)
        self.plans.pop(vid, None)
        self.outcomes.pop(vid, None)
        state = "failed" if plan.failed else str(res.status)
        self._finished(vid, state, str(res.error or "") or "; ".join(e for _, e, _ in plan.failed))
        self.flush()

    def _finished(self, vid: str, state: str, note: str = "") -> None:
        self.states[vid] = state
        self.progress.video(state)
        self._dirty = True
        if self.echo and state == "failed":
            self.echo(f"archive: FAILED {vid}: {note}")

    def flush(self, force: bool = False) -> None:
        """Rewrite the status table (atomically) when something changed, at most every
        ``status_every_s`` seconds unless ``force``."""
        now = time.monotonic()
        if self._dirty and (force or now - self._last_write >= self.status_every_s):
            self.status.write(self.status_path)
            self._dirty = False
            self._last_write = now

    # ----------------------------------------------------------------- summary
    @property
    def pending(self) -> list[str]:
        return sorted(self.plans)

    def summary(self) -> dict[str, Any]:
        c: dict[str, int] = {}
        for s in self.states.values():
            c[s] = c.get(s, 0) + 1
        return {
            "videos": len(self.manifest),
            "states": c,
            "frames_rendered": self.progress.frames,
            "seconds": round(time.monotonic() - self.progress.t0, 2),
            "status_table": str(self.status_path),
            "records_dir": str(self.records_dir),
            "out_dir": str(self.out_dir),
            "failed": {v: self._error_of(v) for v, s in sorted(self.states.items()) if s == "failed"},
        }

    def _error_of(self, vid: str) -> str:
        for (v, _m), r in self.status.rows.items():
            if v == vid and r.get("state") == "failed":
                return str(r.get("error") or "")
        return ""

    @property
    def ok(self) -> bool:
        return not any(s == "failed" for s in self.states.values())


def run_archive_in_process(
    manifest: Manifest,
    cfg: Config,
    out_dir: str | os.PathLike,
    *,
    components: Any = None,
    work_root: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> ArchiveRun:
    """The archive run in this process, one video and one segment after another — the
    reference the Ray job must agree with (tests, and machines without Ray). The swap
    needs the Ray job (per-patient training) and is refused here."""
    if any("swap" in e.methods for e in manifest.entries):
        raise ConfigError("the in-process archive runner has no per-patient training; run swap through `deid archive` (Ray)")
    run = ArchiveRun(manifest, cfg, out_dir, work_root=work_root, overwrite=overwrite)
    run.begin()
    try:
        _run_in_process(run, manifest, cfg, components, overwrite)
    finally:
        run.finish()
    return run


def _run_in_process(run: ArchiveRun, manifest: Manifest, cfg: Config, components: Any, overwrite: bool) -> None:
    from .pipeline import Components

    comp = components
    for e in manifest.entries:
        if not run.should_plan(e):
            continue
        try:
            plan = plan_video(e, cfg, run.out_dir, run.work_root, run.status, overwrite=overwrite)
        except DeidError as ex:
            run.accept_plan(e, None, ex)
            continue
        todo = run.accept_plan(e, plan)
        if not todo:
            continue
        plan = run.plans[e.video_id]  # as accepted (methods another row's same bytes cover are dropped)
        if comp is None:
            comp = Components.build(cfg, sorted({m for x in manifest.entries for m in x.methods}))
        ready = None
        for k in todo:
            ready = run.accept_segment(render_planned_segment(plan, k, cfg, comp)) or ready
        if ready is not None:
            run.accept_result(ready, *finalize_video(ready, run.segment_outcomes(e.video_id), cfg, comp.identity))


__all__ = [
    "ArchiveEntry",
    "ArchiveProgress",
    "ArchiveRun",
    "DONE_STATES",
    "Manifest",
    "RowError",
    "STATUS_FILE",
    "entry_config",
    "Segment",
    "SegmentOutcome",
    "StatusTable",
    "VideoPlan",
    "check_segmenting",
    "check_work_folder",
    "default_work_root",
    "failed_rows",
    "finalize_video",
    "load_manifest",
    "merge_stats",
    "method_config_hash",
    "parse_methods",
    "plan_segments",
    "plan_video",
    "record_proves",
    "recover_from_audit",
    "remove_partials_of",
    "render_planned_segment",
    "result_rows",
    "run_archive_in_process",
    "segment_file",
    "work_folder",
]
