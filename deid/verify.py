"""Is an output folder ready to share? ``deid verify DIR``.

The last step before de-identified videos leave the hospital: every video in the folder
must be one deid wrote (its audit record beside it says so), unchanged since (the
record's sha256 of the output), finished (no temporary of an interrupted run), passed
by the leak audit, without frames the fail-closed rule only flagged, and free of
container metadata; and nothing in the folder may name
the inputs or show their frames (an archive's ``status.parquet``, the evaluation's
tables, the HTML report: records, which belong with the originals). Any other file whose
bytes FFmpeg decodes as a picture is raw media whatever its name (a video renamed
``.bin``, a photo), so is a face-swap model or face set (a zip whose members say so, by
its bytes) and everything in a folder that holds one (reference embeddings, the session
record), and a symbolic link to a folder is an error (what it holds is not
checked); only such files are probed, so a big folder of outputs costs no more.

Findings are errors (the folder should not be shared as it is; an output written
without the leak audit among them: nothing shows it is leak-free) or warnings (a person
should look: audio kept on purpose, a file deid did not write and could not decode as a
picture, an archive, which is not opened). Nothing is changed or deleted.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

__all__ = ["Finding", "Report", "verify_folder"]

ERROR, WARNING = "error", "warning"

#: files deid writes that name the inputs or show their frames (records, not outputs)
_RECORDS = {
    "status.parquet": "an archive's status table: it names every input",
    "summary.parquet": "an evaluation table: it names the inputs",
    "run.json": "the evaluation's run description: it names the inputs",
    "report.html": "the evaluation report: it names the inputs and shows frames of them (processed) with the original's pose",
    "report_summary.json": "the evaluation report's summary: it names the inputs",
}


def _record_by_content(p: Path) -> str | None:
    """What deid record ``p`` is by its content, whatever its name (a report renamed
    ``notes.html``, a summary renamed ``notes.json``); None for anything else. Reads at
    most the first 64 KiB of a file that is not media."""
    try:
        with open(p, "rb") as f:
            head = f.read(65536)
    except OSError:
        return None
    from .report.build import SUMMARY_SCHEMA
    from .report.html import GENERATOR

    text = head.decode("utf-8", "replace")
    if f'<meta name="generator" content="{GENERATOR}">' in text:
        return _RECORDS["report.html"]
    family = SUMMARY_SCHEMA.split("/")[0] + "/"  # any version of the summary
    if f'"schema": "{family}' in text or f'"schema":"{family}' in text:
        return _RECORDS["report_summary.json"]
    if text.lstrip().startswith("{") and '"deid_version"' in text and '"videos"' in text and '"pose_backend"' in text:
        return _RECORDS["run.json"]
    return None


#: what a face-swap model's folder holds beside the checkpoint and face sets
#: (deid.swap.session, deid.swap.train)
_MODEL_FOLDER_FILES = {"references.npy", "session.json", "preview.png"}

#: archives verify does not open (named, not inspected)
_ARCHIVES = (".zip", ".tar", ".tgz", ".gz", ".bz2", ".xz", ".zst", ".7z", ".rar")
#: FFmpeg reads text as "video" too (ANSI art): not media
_TEXT_FORMATS, _TEXT_CODECS = {"tty"}, {"ansi", "bintext", "xbin", "idf"}


def _media(p: Path) -> str | None:
    """What picture ``p``'s bytes hold, whatever its name ("an image (mjpeg 640x480)",
    "a video (h264 1280x720)"), when FFmpeg can decode a frame of it; else None. Only
    files deid did not write are probed (a raw video renamed .bin, a photo), so a big
    folder of outputs costs nothing more."""
    import av

    from .io.probe import check_readable

    try:
        check_readable(p)  # a regular, non-empty file (not a pipe or device that would block)
        with av.open(str(p), mode="r", metadata_errors="ignore") as c:
            fmt = c.format.name
            if fmt in _TEXT_FORMATS:
                return None
            if not c.streams.video:
                a = c.streams.audio[0] if c.streams.audio else None
                if a is not None and a.codec_context.name and (c.duration or 0) > 0:
                    return f"an audio recording ({a.codec_context.name}; voices identify)"
                return None
            s = c.streams.video[0]
            if s.codec_context.name in _TEXT_CODECS:
                return None
            kind = "an image" if fmt == "image2" or fmt.endswith("_pipe") else "a video"
            try:
                frame = next(c.decode(s), None)
            except Exception:  # noqa: BLE001 - a stream that opens with a size is media even if it does not decode here
                frame = None
            w, h = (frame.width, frame.height) if frame is not None else (s.codec_context.width, s.codec_context.height)
            if not (w and h):
                return None
            return f"{kind} ({s.codec_context.name} {w}x{h})"
    except Exception:  # noqa: BLE001 - does not open as media: not media (text, tables, anything else)
        return None


def _swap_part(p: Path) -> str | None:
    """What part of a face-swap model ``p``'s bytes are, whatever its name: a deid swap
    checkpoint (``deid swap train``, ``swap.keep_model``, a donor's pre-training) or a face
    set (aligned face crops); else None. Both are zip files (torch.save, numpy.savez), so
    only zip files are opened, and of them only the member list and the pickle's bytes."""
    import zipfile

    from .swap.train import FORMAT

    try:
        if not p.is_file() or not zipfile.is_zipfile(p):
            return None
        with zipfile.ZipFile(p) as z:
            names = z.namelist()
            if "crops.npy" in names:
                return ("aligned face crops (a face-swap face set): pictures of a person's face, with the paths of the "
                        "videos they came from")
            pickles = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
            if pickles and z.getinfo(pickles[0]).file_size < (64 << 20) and FORMAT.encode() in z.read(pickles[0]):
                return "a face-swap model: its decoders can re-create the faces it was trained on (a patient's, a donor's)"
    except Exception:  # noqa: BLE001 - not a readable zip: not a swap model
        return None
    return None


@dataclass(frozen=True)
class Finding:
    level: str  # error | warning
    path: str  # relative to the folder
    what: str


@dataclass
class Report:
    folder: str
    outputs: int = 0  # videos with a valid audit record
    names: dict[str, int] = field(default_factory=dict)  # io.output_names -> outputs
    findings: list[Finding] = field(default_factory=list)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.level == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == WARNING]

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        return {"folder": self.folder, "ok": self.ok, "outputs": self.outputs, "names": self.names,
                "findings": [asdict(f) for f in self.findings]}


def _read_record(a: Path) -> dict[str, Any]:
    """An audit record's JSON object, with ``status`` None or a string (ValueError if not)."""
    rec = json.loads(a.read_text(encoding="utf-8"))
    if not isinstance(rec, dict):
        raise ValueError(f"a JSON {type(rec).__name__}, not an object")
    status = rec.get("status")
    if status is not None and not isinstance(status, str):
        raise ValueError(f"'status' is {status!r}, not a string")
    return {**rec, "status": status}


def obj_or_empty(v: Any) -> dict[str, Any]:
    """``v`` when it is a JSON object, else an empty one (a hand-edited record)."""
    return v if isinstance(v, dict) else {}


def _record_fields(rec: dict[str, Any]) -> tuple[str, str, int, dict[str, Any]]:
    """The fields verify judges an output by, type-checked (a record edited by hand, or
    written by something else, must be a finding, not a crash): the output's sha256
    ("" if none), io.output_names, counts.frames_fail_closed and leak_audit (its
    ``leaks`` an int). ValueError names the first field of the wrong type."""

    def obj(d: dict[str, Any], key: str, where: str) -> dict[str, Any]:
        v = d.get(key)
        if v is None:
            return {}
        if not isinstance(v, dict):
            raise ValueError(f"{where}{key} is {type(v).__name__} {v!r:.40}, not an object")
        return v

    def count(d: dict[str, Any], key: str, where: str) -> int:
        v = d.get(key)
        if v is None:
            return 0
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{where}{key} is {v!r:.40}, not a count")
        return v

    want = obj(rec, "output", "").get("sha256") or ""
    if not isinstance(want, str):
        raise ValueError(f"output.sha256 is {want!r:.40}, not a string")
    names = obj(obj(rec, "config", ""), "io", "config.").get("output_names", "input")
    if not isinstance(names, str):
        raise ValueError(f"config.io.output_names is {names!r:.40}, not a string")
    fc = count(obj(rec, "counts", ""), "frames_fail_closed", "counts.")
    leak = obj(rec, "leak_audit", "")
    leak = {**leak, "leaks": count(leak, "leaks", "leak_audit.")}
    return want, names, fc, leak


def verify_folder(folder: str | os.PathLike, *, hashes: bool = True,
                  progress: Callable[[str], None] | None = None) -> Report:
    """Check every file under ``folder`` (see the module doc). ``hashes``: compare each
    output's sha256 with its audit record's (reads every byte; off for a quick look)."""
    from .config import weakened_audit, weakened_method
    from .io import VIDEO_EXTENSIONS, has_sensitive_tags, probe
    from .io.atomic import PARTIAL_MARK
    from .pipeline import audit_path, frames_path, sha256_file

    root = Path(folder)
    if not root.is_dir():
        from .errors import InvalidInputError

        raise InvalidInputError(f"{root}: not a folder")
    rep = Report(str(root))

    def add(level: str, p: Path, what: str) -> None:
        rep.findings.append(Finding(level, str(p.relative_to(root)), what))

    files = sorted(p for p in root.rglob("*") if p.is_file() or p.is_symlink())
    videos = [p for p in files if p.suffix.lower() in VIDEO_EXTENSIONS and PARTIAL_MARK not in p.name]
    audits = {p for p in files if p.name.endswith(".audit.json")}
    tables = {p for p in files if p.name.endswith(".frames.parquet")}
    known: set[Path] = set()
    input_paths: list[str] = []  # the input paths the outputs' audit records hold
    for v in videos:
        if progress:
            progress(str(v.relative_to(root)))
        a, t = audit_path(v), frames_path(v)
        known |= {v, a, t}
        if v.is_symlink():
            add(ERROR, v, "a symbolic link: what it points to is not checked here (copy the file in)")
            continue
        if a not in audits:
            add(ERROR, v, "no audit record beside it: nothing says deid de-identified it (not written by deid, or its "
                          "record was removed)")
            continue
        try:
            rec = _read_record(a)
        except (OSError, ValueError) as e:
            add(ERROR, a, f"unreadable audit record ({e})")
            continue
        status = rec["status"]
        if status is None:
            add(ERROR, v, "its audit record has no status: nothing says deid finished it")
            continue
        if status not in ("done", "partial"):
            add(ERROR, v, f"its audit record says {status!r}, not done")
            continue
        try:
            want, names, fc, leak = _record_fields(rec)
        except ValueError as e:
            add(ERROR, a, f"invalid audit record ({e})")
            continue
        rep.outputs += 1
        rep.names[names] = rep.names.get(names, 0) + 1
        inp = rec.get("input")
        if isinstance(inp, dict) and isinstance(inp.get("path"), str) and inp["path"]:
            input_paths.append(inp["path"])  # what the record names (io.output_names=input)
        if status == "partial":
            add(WARNING, v, "partial: the input was corrupt and only its decodable part was de-identified "
                            f"({rec.get('error') or 'see the audit record'})")
        if hashes:
            if not want:
                add(ERROR, v, "its audit record has no sha256 of the output: cannot tell whether it changed since")
            elif sha256_file(v) != want:
                add(ERROR, v, "changed since deid wrote it (sha256 differs from its audit record)")
        if fc and rec.get("fail_closed_policy") == "flag":
            add(ERROR, v, f"{fc} frame(s) with a person and no head region were left as they were "
                          "(track.fail_closed=flag: for review, not for sharing; the frames table lists them)")
        if leak.get("skipped"):
            # nothing shows it is leak-free: the folder's promise (exit 0 = every video
            # passed the leak audit) does not hold for it
            add(ERROR, v, "not leak-audited (audit.leak_check was off when it was made): nothing shows that no face "
                          "is left in it; de-identify it again with the leak audit on")
        elif leak["leaks"] > 0:
            add(ERROR, v, f"the leak audit found {leak['leaks']} face(s) still matching the input (published with "
                          f"audit.on_leak=flag, for inspection, not for sharing)")
        if not leak.get("skipped"):
            audit_cfg = obj_or_empty(obj_or_empty(rec.get("config")).get("audit"))
            weak = weakened_audit(audit_cfg)
            if weak:
                add(WARNING, v, f"leak-audited with weaker settings than the defaults ({'; '.join(weak)}): its "
                                "'no leak' says less than usual")
            if not leak.get("verifiable_faces") and leak.get("output_faces_found"):
                add(WARNING, v, f"the leak audit found faces in {leak['output_faces_found']} of its output frames but no "
                                "face of the input it could compare them with (too small, not found, or ruled out by its control comparison): its 'no leak' "
                                "compared nothing; look at the video")
        made = obj_or_empty(rec.get("config"))
        weaker = weakened_method(str(rec.get("method") or ""), obj_or_empty(made.get("anonymize")))
        if weaker:
            add(WARNING, v, f"made with a weaker {rec.get('method')} than the calibrated default ({'; '.join(weaker)}): "
                            "the leak audit is one face recogniser; a person may still recognise the face, so look at it")
        if leak.get("text_regions"):
            add(WARNING, v, f"text stays at the same place in it, at {leak['text_regions']} (fractions of the frame): "
                            "check that it names no one (anonymize.fixed_regions fills such boxes)")
        try:
            tags = has_sensitive_tags(v)
            audio = probe(v).has_audio
        except Exception as e:  # noqa: BLE001 - a file that cannot be read is a finding, not a crash
            add(ERROR, v, f"cannot be read as a video ({e})")
            continue
        if tags:
            add(ERROR, v, f"identifying container metadata: {', '.join(tags)}")
        if audio:
            add(WARNING, v, "has an audio track (io.keep_audio): voices identify people")
        if t not in tables:
            add(WARNING, v, "no frames table beside it (<name>.frames.parquet: every frame's decision)")
    tables_in: dict[Path, int] = {}  # an evaluation's metrics/ folder -> its files (one finding for all)
    # a patient's face-swap model and what its folder holds beside it (face crops, reference
    # embeddings, a preview of the patient's face, the session record): biometric data
    swap_parts = {p: what for p in files if p not in known and not p.is_symlink() and (what := _swap_part(p))}
    # a model's folder: where its checkpoint lies, or the folder above its faces/ set
    model_dirs = {p.parent.parent if p.parent.name == "faces" else p.parent for p in swap_parts}
    # below the shared folder everything in a model's folder is part of it; in the shared
    # folder itself only the files a model's folder holds (the rest gets its own finding)
    nested = model_dirs - {root}
    for p in files:
        if p in known:
            continue
        name = p.name
        parts = p.relative_to(root).parts
        if PARTIAL_MARK in name:
            add(ERROR, p, "an unfinished temporary of an interrupted run (deid deletes it at its next run in this folder)")
        elif p in swap_parts:
            add(ERROR, p, f"{swap_parts[p]}; it must not leave with the outputs (keep it private, or delete it)")
        elif nested.intersection(p.parents) or (root in model_dirs and (p.name in _MODEL_FOLDER_FILES or parts[0] == "faces")):
            add(ERROR, p, "part of a face-swap model's folder (reference embeddings of a face, a preview of it, the "
                          "record of whose model it is): it must not leave with the outputs")
        elif "metrics" in parts[:-1] and p.suffix in (".parquet", ".json", ".pkl"):  # the evaluation's kinds of file
            top = root.joinpath(*parts[:parts.index("metrics") + 1])
            tables_in[top] = tables_in.get(top, 0) + 1
        elif name in _RECORDS:
            add(ERROR, p, _RECORDS[name] + "; keep it with the originals, not in the folder you share")
        elif p.suffix == ".parquet" and not name.endswith(".frames.parquet"):
            add(ERROR, p, "an evaluation table or part: it names the inputs; keep it with the originals")
        elif p in audits:
            add(WARNING, p, "an audit record without its video")
        elif p in tables:
            add(WARNING, p, "a frames table without its video")
        elif p.is_symlink() and p.is_dir():
            add(ERROR, p, "a symbolic link to a folder: what it holds is not checked here (copy the files in, or remove "
                          "the link)")
        elif (media := _media(p)) is not None:
            add(ERROR, p, f"raw media, not a deid output: it holds {media} that deid did not write (whatever its name); "
                          "remove it, or de-identify it, before sharing")
        elif name.lower().endswith(_ARCHIVES):
            add(WARNING, p, "an archive: what it holds was not inspected (unpack it here and verify again, or leave it out)")
        elif (what := _record_by_content(p)) is not None:
            add(ERROR, p, what + " (renamed); keep it with the originals, not in the folder you share")
        else:
            add(WARNING, p, "not written by deid: check it before sharing")
    for top, n in tables_in.items():
        add(ERROR, top, f"the evaluation's tables ({n} file(s)): they name the inputs; keep them with the originals "
                        "(deid anonymize --evaluate --records DIR, or io.output_names=pseudonym, writes them outside the outputs)")
    if not rep.outputs and not rep.errors:
        rep.findings.append(Finding(ERROR, ".", "no de-identified video here: an empty or mistyped folder is not ready to share"))
    if rep.names.get("input"):
        rep.findings.append(Finding(WARNING, ".", f"{rep.names['input']} output(s) named after their inputs "
                                                  "(io.output_names=input): check that no file or folder name identifies a patient"
                                                  + (f"; their audit records also hold each input's path, e.g. "
                                                     f"{input_paths[0]!r} ({len(set(input_paths))} path(s) in all)"
                                                     if input_paths else "")))
    return rep
