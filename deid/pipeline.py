"""One video, one process: decode -> detect/track -> anonymize -> encode -> audit -> publish.

Design
------
- *Analysis once, render many*: faces are found and tracked once per video; every
  requested method (blur, mask, ...) renders the same regions, so methods are compared
  on equal terms and extra methods cost only their rendering and encoding.
- *Streaming with bounded lookahead*: frames wait in a buffer of ``track.lookahead``
  frames until their regions are final (gap filling and smoothing need a little
  future), so memory does not grow with video length.
- *Overlapped stages*: decoding runs in a reader thread and encoding in a writer
  thread (FFmpeg releases the GIL), detection in the main thread.
- *Fail closed*: a frame with a person but no head region is redacted (by default);
  every output is re-checked by the leak audit before it is published; outputs appear
  under their final name only when complete (see :mod:`deid.io.atomic`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import queue
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .anonymize import build_anonymizer, redact_frame
from .anonymize.base import fill_fixed
from .config import Config, config_hash
from .errors import DeidError, InvalidInputError, LeakDetectedError, storage_error
from .io import VIDEO_EXTENSIONS, VideoReader, VideoWriter, atomic_output, check_output_path, probe, write_text_atomic
from .io.prefetch import prefetch
from .track import FrameAnalyzer, Planner
from .types import BoxSource, FrameDecision, FramePlan, Timings, VideoInfo

log = logging.getLogger(__name__)



# ----------------------------------------------------------------------------- naming


def output_path(
    input_path: str | os.PathLike, out_dir: str | os.PathLike, method: str, container: str = "mp4", name: str | None = None
) -> Path:
    """``<out_dir>/<name or input stem>.<method>.<container>`` — e.g. ``clip.blur.mp4``."""
    return Path(out_dir) / f"{name or Path(input_path).stem}.{method}.{container}"


def pseudonym(input_sha256: str) -> str:
    """The output name of an input under ``io.output_names: pseudonym``: the first 16 hex
    digits of its sha256 (the audit record carries the whole hash, so whoever holds the
    original file can find its outputs; nobody else learns its name)."""
    return str(input_sha256)[:16]


@dataclass(frozen=True)
class PlannedInput:
    """An input video and where its outputs go: ``<out>/<subdir>/<name>.<method>.mp4``."""

    path: Path
    subdir: Path = Path(".")
    name: str = ""


def resolved(path: str | os.PathLike) -> Path:
    """``path`` made absolute with its links followed, or only made absolute when that
    fails (a symbolic link loop): such a file then fails on its own with a clear error."""
    p = Path(path).expanduser()
    try:
        return p.resolve()
    except (OSError, RuntimeError):  # RuntimeError: "Symlink loop from ..." (Python 3.11)
        return p.absolute()


def _folder_videos(arg: Path, extensions: Sequence[str], never: Sequence[Path]) -> list[Path]:
    """Video files under folder ``arg`` (recursive; links to folders are not followed,
    and each one met is warned about, as is a link that leads nowhere)."""
    files = []
    for root, dirs, names in os.walk(arg):
        for d in dirs:
            if os.path.islink(os.path.join(root, d)):
                log.warning("%s: a link to a folder, not followed (its videos are not processed; give %s itself as an "
                            "input to process them)", os.path.join(root, d), os.path.realpath(os.path.join(root, d)))
        for n in names:
            q = Path(root) / n
            if q.suffix.lower() not in extensions:
                continue
            if not q.is_file():
                log.warning("%s: a link that leads to no file (left out)", q)
                continue
            if not any(x in resolved(q).parents for x in never):
                files.append(q)
    return sorted(files)


def plan_inputs(
    paths: Iterable[str | os.PathLike], extensions: Sequence[str] = VIDEO_EXTENSIONS, exclude: Sequence[str | os.PathLike] = ()
) -> list[PlannedInput]:
    """Collision-free output names. Files found inside a folder argument keep their
    sub-folder below the output directory (``clips/a/x.mp4`` -> ``out/a/x.blur.mp4``);
    inputs that would still share a name (``a/x.mp4`` and ``b/x.mp4`` given as files) get
    a short hash of their path appended (``x-1a2b3c4d.blur.mp4``). Files inside an
    ``exclude`` folder (the output folder, when it lies inside an input folder) are not
    taken from folder scans."""
    planned: list[PlannedInput] = []
    seen: set[str] = set()
    never = [resolved(x) for x in exclude]
    for arg in map(Path, paths):
        if arg.is_dir():
            files = _folder_videos(arg, extensions, never)
            items = [(q, q.parent.relative_to(arg)) for q in scanned_inputs(files, arg)]
        else:
            items = [(arg, Path("."))]
        for q, sub in items:
            key = str(resolved(q)) if q.exists() else str(q)
            if key in seen:
                continue
            seen.add(key)
            planned.append(PlannedInput(q, sub, q.stem))
    counts: dict[tuple[str, str], int] = {}
    for p in planned:
        counts[(str(p.subdir), p.name)] = counts.get((str(p.subdir), p.name), 0) + 1
    out = []
    for p in planned:
        if counts[(str(p.subdir), p.name)] > 1:
            h = hashlib.sha1(str(p.path.resolve()).encode()).hexdigest()[:8]
            p = PlannedInput(p.path, p.subdir, f"{p.name}-{h}")
        out.append(p)
    return out


def read_record(output: str | os.PathLike) -> dict[str, Any] | None:
    """The audit record beside ``output`` as a JSON object; None when there is none, it
    cannot be read or parsed, or it is not an object (not a record of ours)."""
    try:
        rec = json.loads(audit_path(output).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


def is_deid_output(video: str | os.PathLike) -> bool:
    """Whether ``video`` is an output of deid: its audit record lies beside it. Folder
    scans leave such files out, so an earlier run's outputs kept under the input folder
    are not taken for new inputs (and de-identified again)."""
    rec = read_record(video)
    return rec is not None and "deid_version" in rec and isinstance(rec.get("output"), dict)


def scanned_inputs(files: Sequence[Path], folder: str | os.PathLike) -> list[Path]:
    """A folder scan's video files less deid's own outputs (:func:`is_deid_output`),
    with a warning saying how many were left out."""
    kept = [q for q in files if not is_deid_output(q)]
    if len(kept) < len(files):
        log.warning("%s: left out %d video(s) with a deid audit record beside them (outputs of an earlier run, not "
                    "inputs); give such a file by name to process it anyway", folder, len(files) - len(kept))
    return kept


def record_describes(rec: dict[str, Any], output: str | os.PathLike) -> bool:
    """Whether audit record ``rec`` describes the file ``output`` as it is now (the
    output's sha256 it holds): a run killed between publishing a new record and renaming
    its new video into place leaves the old video beside it."""
    out = rec.get("output") if isinstance(rec, dict) else None
    want = out.get("sha256") if isinstance(out, dict) else ""
    return isinstance(want, str) and bool(want) and sha256_file(output) == want


def record_proves(rec: dict[str, Any] | None, output: str | os.PathLike, input_sha256: str) -> bool:
    """Whether audit record ``rec`` says ``output`` was published (done or partial) from an
    input with sha256 ``input_sha256`` and describes that file as it is now
    (:func:`record_describes`: reads the whole output; an unreadable one is not proven).
    The one check behind ``--skip-existing`` and the archive's reruns and recovery."""
    if not isinstance(rec, dict) or rec.get("status") not in ("done", "partial"):
        return False
    inp = rec.get("input")
    if not isinstance(inp, dict) or not input_sha256 or inp.get("sha256") != input_sha256:
        return False
    try:
        return record_describes(rec, output)
    except OSError:
        return False


def audit_path(video_out: str | os.PathLike) -> Path:
    p = Path(video_out)
    return p.with_name(p.name.rsplit(".", 1)[0] + ".audit.json")


def frames_path(video_out: str | os.PathLike) -> Path:
    p = Path(video_out)
    return p.with_name(p.name.rsplit(".", 1)[0] + ".frames.parquet")


def discover_inputs(paths: Iterable[str | os.PathLike], extensions: Sequence[str] = VIDEO_EXTENSIONS) -> list[Path]:
    """Files as given; folders searched recursively for video extensions. Missing paths are
    kept (they fail later with a clear error, and the rest of the batch still runs)."""
    out: list[Path] = []
    seen = set()
    for p in map(Path, paths):
        items = _folder_videos(p, extensions, ()) if p.is_dir() else [p]
        for q in items:
            key = str(resolved(q)) if q.exists() else str(q)
            if key not in seen:
                seen.add(key)
                out.append(q)
    return out


def sha256_file(path: str | os.PathLike, bufsize: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(bufsize):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- components


@dataclass
class Components:
    """Models built once and reused across videos of a batch."""

    cfg: Config
    detector: Any
    pose: Any | None = None
    presence: Any | None = None
    anonymizers: dict[str, Any] = field(default_factory=dict)
    identity: Any | None = None  # for the leak audit
    more_people: Any | None = None  # deid.track.people.MaskedRepeat (track.pose_more_people)

    def with_anonymizer(self, method: str, anonymizer: Any) -> "Components":
        """The same models with ``anonymizer`` for ``method`` added (e.g. a patient's swap):
        every other field carried over (a field left out by a positional rebuild would
        silently switch its feature off)."""
        import dataclasses

        return dataclasses.replace(self, anonymizers={**self.anonymizers, method: anonymizer})

    @classmethod
    def build(cls, cfg: Config, methods: Sequence[str], **prebuilt: Any) -> "Components":
        from .detect import build_detector

        apply_process_settings(cfg)

        detector = prebuilt.get("detector") or build_detector(cfg)
        pose = prebuilt.get("pose")
        presence = prebuilt.get("presence")
        if cfg.track.pose_fallback and pose is None:
            from .registry import POSE_ESTIMATORS

            # keep_outside: a head cut off by the frame edge still gets its (clipped) box
            pose = POSE_ESTIMATORS.create(cfg.track.pose_backend, keep_outside=True)
        more_people = prebuilt.get("more_people")
        # MediaPipe's pose models report one person a frame, and so does RTMPose without a
        # person detector of its own (it takes MediaPipe's one person as its box)
        single_person = (cfg.track.pose_backend in ("mediapipe_pose", "mediapipe_holistic")
                         or getattr(pose, "person_boxes", "") == "mediapipe")
        if single_person and cfg.track.pose_backend == "rtmpose" and prebuilt.get("pose") is None:
            log.warning("track.pose_backend=rtmpose without a person detector (DEID_RTMPOSE_DET_MODEL): it places one "
                        "person's head a frame, on MediaPipe's box; set DEID_RTMPOSE_DET_MODEL to a YOLOX .onnx for every person")
        if (more_people is None and cfg.track.pose_fallback and cfg.track.pose_more_people > 0 and cfg.track.pose_check_every > 0
                and single_person and prebuilt.get("pose") is None):
            # a still-image pose instance beside the tracking one looks for more people with
            # the ones found blacked out (deid.track.people)
            from .registry import POSE_ESTIMATORS
            from .track.people import MaskedRepeat

            more_people = MaskedRepeat(POSE_ESTIMATORS.create("mediapipe_pose", static=True, keep_outside=True),
                                       max_extra=cfg.track.pose_more_people, min_score=cfg.track.pose_min_score)
        if presence is None:
            # person presence decides fail-closed frames, with or without the pose fallback:
            # without it a missed face would pass as "nobody there"
            from .track.presence import SegmentationPresence

            presence = SegmentationPresence()
        if not cfg.track.pose_fallback:
            log.warning("track.pose_fallback=false: a face the detectors miss gets no head region; frames with a "
                        "person in them are redacted whole instead (track.fail_closed=%s)", cfg.track.fail_closed)
        if cfg.track.fail_closed == "flag":
            log.warning("track.fail_closed=flag: frames with a person and no head region are written as they are "
                        "(counted and flagged in the audit, not redacted)")
        doubles = backends_for_tests_only(cfg)
        if doubles:
            log.warning("%s: test double(s) from deid.testing, for synthetic test clips only: on real video they find "
                        "no face and re-identify no one (never use them for outputs to share)", ", ".join(doubles))
        from .config import weakened_method

        softer = [w for m in methods for w in weakened_method(m, asdict(cfg.anonymize))]
        if softer:
            log.warning("%s: hides less than the calibrated default; `deid verify` warns about outputs made so",
                        "; ".join(softer))
        weak = cfg.audit.weakened() if cfg.audit.leak_check else []
        if weak:
            log.warning("the leak audit is weaker than the default: %s; `deid verify` warns about outputs made so",
                        "; ".join(weak))
        anons = dict(prebuilt.get("anonymizers") or {})
        for m in methods:
            if m not in anons:
                anons[m] = build_anonymizer(m, cfg)
        identity = prebuilt.get("identity")
        if cfg.audit.leak_check and identity is None:
            from .registry import IDENTITY_ENCODERS

            identity = IDENTITY_ENCODERS.create(cfg.audit.identity_backend)
        return cls(cfg, detector, pose, presence, anons, identity, more_people)


def apply_process_settings(cfg: Config) -> None:
    """Apply the process-wide settings ``cfg`` asks for: OpenCV's thread pool
    (``track.opencv_threads``). :meth:`Components.build` calls it, so it holds for the
    whole process (a CLI run, a Ray actor) from then on."""
    import cv2

    n = int(cfg.track.opencv_threads)
    # OpenCV's own pool beside deid's reader, writer and worker threads oversubscribes the
    # cores (and in a Ray actor it would size itself to the whole node): 1 by default.
    cv2.setNumThreads(n if n > 0 else -1)  # -1: OpenCV's default


# ----------------------------------------------------------------------------- results


@dataclass
class MethodOutput:
    method: str
    path: str
    audit_path: str = ""
    frames_written: int = 0
    leak: dict[str, Any] = field(default_factory=dict)
    anonymizer_stats: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""  # of the published file (recorded in the audit: proves which file it describes)
    audio: bool = False  # the file holds an audio stream (only with io.keep_audio and an input with sound)


@dataclass
class VideoResult:
    input: str
    status: str  # done | failed | partial | planned | skipped
    error: str = ""
    error_kind: str = ""
    outputs: list[MethodOutput] = field(default_factory=list)
    info: VideoInfo | None = None
    frames_read: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    plans: list[FramePlan] | None = None  # only when keep_plans=True
    outputs_written: dict[str, int] = field(default_factory=dict)
    skipped_methods: list[str] = field(default_factory=list)  # already done (--skip-existing): not rendered again
    evaluation_error: str = ""  # --evaluate: why this video's outputs (or some of them) were not evaluated
    # methods that failed while the video's others were written (a swap whose model could
    # not be trained): method -> {"error": ..., "kind": ...}
    failed_methods: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in ("done", "partial", "planned", "skipped") and not self.failed_methods


# ----------------------------------------------------------------------------- threads


class _WriterThread:
    """Encodes frames for several writers in one background thread."""

    def __init__(self, writers: dict[str, VideoWriter], batch: int = 16):
        self.writers = writers
        # rendered frames waiting for the encoder: at most a batch (``io.batch_mb``
        # bounds it in bytes), 2..16
        self.q: queue.Queue = queue.Queue(maxsize=max(2, min(16, int(batch))))
        self.error: BaseException | None = None
        self.t = threading.Thread(target=self._run, name="deid-writer", daemon=True)
        self.t.start()

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            if self.error is not None:
                continue
            method, frame, pts = item
            try:
                self.writers[method].write(frame, pts)
            except BaseException as e:  # noqa: BLE001
                self.error = e

    def put(self, method: str, frame: np.ndarray, pts: int | None) -> None:
        if self.error is not None:
            raise self.error
        self.q.put((method, frame, pts))

    def close(self) -> None:
        self.q.put(None)
        self.t.join()
        if self.error is not None:
            raise self.error


# ----------------------------------------------------------------------------- main entry


class _Bookkeeper:
    """Per-frame decisions kept compactly (one small row a frame), running counts, and
    the full plans of the frames the leak audit will sample."""

    def __init__(self, frame_count: int, sample_frames: int, keep_all: bool = False):
        from .audit import FrameRows, sample_indices

        self.counts = _counts([])
        self.rows = FrameRows()
        self.sample = set(sample_indices(frame_count, sample_frames))
        self.sampled: dict[int, FramePlan] = {}
        self.keep_all = keep_all
        self.plans: list[FramePlan] = []

    def add(self, plan: FramePlan) -> None:
        for k, v in _counts([plan]).items():
            self.counts[k] += v
        self.rows.append(plan.index, plan.decision.value, plan.person_present, [f.source.value for f in plan.faces], [f.box for f in plan.faces])
        if plan.index in self.sample:
            self.sampled[plan.index] = plan
        if self.keep_all:
            self.plans.append(plan)


def _counts(plans: Iterable[FramePlan]) -> dict[str, int]:
    c = {
        "frames_with_faces": 0,
        "regions_detected": 0,
        "regions_interpolated": 0,
        "regions_held": 0,
        "regions_pose": 0,
        "frames_pose_only": 0,
        "frames_fail_closed": 0,
        "frames_person_present": 0,
    }
    for p in plans:
        if p.faces:
            c["frames_with_faces"] += 1
        if p.person_present:
            c["frames_person_present"] += 1
        if p.decision == FrameDecision.FAIL_CLOSED:
            c["frames_fail_closed"] += 1
        srcs = [f.source for f in p.faces]
        c["regions_detected"] += srcs.count(BoxSource.DETECTED)
        c["regions_interpolated"] += srcs.count(BoxSource.INTERPOLATED)
        c["regions_held"] += srcs.count(BoxSource.HELD)
        c["regions_pose"] += srcs.count(BoxSource.POSE)
        if srcs and all(s == BoxSource.POSE for s in srcs):
            c["frames_pose_only"] += 1
    return c


def _named_backends(cfg: Config) -> list[tuple[str, Any, str]]:
    """(config key, registry, name) of every backend a de-identification run with ``cfg`` builds."""
    from .registry import DETECTORS, IDENTITY_ENCODERS, POSE_ESTIMATORS

    named = [("detect.backend", DETECTORS, cfg.detect.backend)]
    named += [("detect.extra", DETECTORS, e.strip()) for e in (cfg.detect.extra or "").split(",") if e.strip()]
    if cfg.track.pose_fallback:
        named.append(("track.pose_backend", POSE_ESTIMATORS, cfg.track.pose_backend))
    if cfg.audit.leak_check:
        named.append(("audit.identity_backend", IDENTITY_ENCODERS, cfg.audit.identity_backend))
    return named


def check_backends(cfg: Config) -> None:
    """Every backend the configuration names exists, checked by name without building
    it, the error naming the config key: a dry run reported a typo (``detect.extra:
    centreface``) as planned, and a real run refused it without saying which key."""
    from .errors import ConfigError

    for key, registry, name in _named_backends(cfg):
        if name not in registry:
            raise ConfigError(f"{key}: unknown {registry.kind} {name!r}; choose one of: {', '.join(registry.names())}")


def backends_for_tests_only(cfg: Config) -> list[str]:
    """``key=name`` of each backend ``cfg`` names that is a test double (deid.testing:
    coloured squares for faces, patches for identities), which sees nothing of a real video."""
    return [f"{key}={name}" for key, registry, name in _named_backends(cfg) if registry.is_test_double(name)]


def _check_name_lengths(src: str, video_out: Path) -> None:
    """Refuse, before any work, an output whose file names the file system cannot hold:
    a long input name fits as ``<stem>.mp4`` but not as ``<stem>.blur.frames.parquet``
    (the run failed after rendering the whole video, with a traceback)."""
    from .io.atomic import NAME_MAX

    for f in (video_out, audit_path(video_out), frames_path(video_out)):
        n = len(f.name.encode())
        if n > NAME_MAX:
            raise InvalidInputError(
                f"{src}: output name {f.name[:40]}... would be {n} bytes, more than a file name may hold ({NAME_MAX}); "
                "rename the input to a shorter name, or use --set io.output_names=pseudonym")


def process_video(
    input_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    methods: Sequence[str],
    cfg: Config,
    *,
    components: Components | None = None,
    overwrite: bool = False,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
    keep_plans: bool = False,
    sha256: bool = True,
    name: str | None = None,
    protect: "set[str] | frozenset[str]" = frozenset(),
    input_sha256: str | None = None,
) -> VideoResult:
    """De-identify one video with every method in ``methods``. Never raises for a bad
    video: the error travels in the result (status ``failed``) so batches go on.
    ``protect``: resolved paths no output may replace, ``--overwrite`` or not (the other
    inputs of a batch). ``input_sha256``: the input's hash when the caller has it. With
    ``io.output_names: pseudonym`` the outputs are named after that hash (computed here
    when not given) unless ``name`` is given."""
    src = str(input_path)
    res = VideoResult(input=src, status="failed")
    timings = Timings()
    try:
        t0 = time.perf_counter()
        info = probe(src)
        res.info = info
        timings.add("probe", time.perf_counter() - t0)
        if info.other_video_streams:
            log.warning("%s: %d more video stream(s) beside the first (e.g. a second camera): only the first is "
                        "de-identified and written; the others are left out of the output", src, info.other_video_streams)
        container = cfg.io.container
        if cfg.io.output_names == "pseudonym" and not name:
            input_sha256 = input_sha256 or sha256_file(src)
            name = pseudonym(input_sha256)
        outs = {m: output_path(src, out_dir, m, container, name) for m in methods}
        if len(set(outs.values())) != len(outs):
            raise InvalidInputError(f"{src}: methods {list(methods)} would write the same output name")
        for p in outs.values():
            _check_name_lengths(src, p)
            check_output_path(p, [src], overwrite=overwrite)
            if protect and str(p.resolve()) in protect:
                raise InvalidInputError(f"{p}: refusing to write an output over another input of this batch")
        if dry_run:
            res.status = "planned"
            res.outputs = [MethodOutput(m, str(p)) for m, p in outs.items()]
            return res
        comp = components or Components.build(cfg, methods)
        _run(src, info, outs, cfg, comp, res, timings, progress, keep_plans, sha256, input_sha256)
    except DeidError as e:
        res.status = "failed"
        res.error = str(e)
        res.error_kind = e.kind
    except Exception as e:  # unexpected: still per-video, never kills the batch
        res.status = "failed"
        full = storage_error(e, f"{src}: cannot write to {out_dir}")
        if full is not None:  # the disk, not deid: no traceback
            res.error, res.error_kind = str(full), full.kind
        else:
            log.exception("unexpected error on %s", src)
            res.error = f"{src}: unexpected {type(e).__name__}: {e}"
            res.error_kind = "internal"
    timings.add("total", timings.elapsed())
    res.timings = {k: round(v, 4) for k, v in timings.seconds.items()}
    return res


@dataclass
class SegmentResult:
    """What rendering a frame range produced (before any verification or publication)."""

    start: int
    stop: int
    frames_read: int = 0  # frames of [start, stop) decoded
    written: dict[str, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    book: Any = None  # _Bookkeeper: per-frame rows + the leak audit's sampled plans
    partial: bool = False
    error: str = ""


def render_segment(
    src: str,
    info: VideoInfo,
    outs: dict[str, Path],
    cfg: Config,
    comp: Components,
    *,
    start: int = 0,
    stop: int | None = None,
    context: int = 0,
    timings: Timings | None = None,
    progress: Callable[[int], None] | None = None,
    keep_plans: bool = False,
    pts_origin: int | None = None,
) -> SegmentResult:
    """Analyze and render the frames ``[start, stop)`` of ``src`` into one file per method
    (``outs``: method -> path, written directly; callers make them temporaries).

    ``context`` extra frames on each side are decoded and analyzed (not written) so that
    tracking, gap filling and smoothing at the segment's edges see the same evidence as a
    whole-video run. A whole video is the segment ``[0, frame_count)``.
    """
    timings = timings or Timings()
    stop = info.frame_count if stop is None else min(int(stop), info.frame_count)
    start = max(0, int(start))
    methods = list(outs)
    analyzer = FrameAnalyzer(comp.detector, cfg.track, comp.pose, comp.presence, comp.more_people)
    analyzer.reset()
    for a in comp.anonymizers.values():
        if hasattr(a, "reset"):
            a.reset()
    planner = Planner(cfg.track, info.width, info.height)
    read_lo, read_hi = max(0, start - context), min(info.frame_count, stop + context)
    reader = VideoReader(
        src, info=info, chunk_size=cfg.io.chunk_size, on_corrupt=cfg.io.on_corrupt, decoder=cfg.io.decoder,
        start=read_lo, stop=read_hi, batch_mb=cfg.io.batch_mb,
    )
    book = _Bookkeeper(info.frame_count, cfg.audit.for_video(info.frame_count, info.fps).sample_frames, keep_all=keep_plans)
    pending: deque[tuple[int, np.ndarray, int | None]] = deque()
    redact_color = (128, 128, 128)
    fixed = cfg.anonymize.fixed_regions
    seg = SegmentResult(start, stop, book=book)

    with contextlib.ExitStack() as stack:
        writers = {}
        for m in methods:
            writers[m] = stack.enter_context(
                VideoWriter.like(
                    outs[m],
                    info,
                    cfg.io,
                    audio_from=src if cfg.io.keep_audio and start == 0 and stop == info.frame_count else None,
                    audio_offset=info.start_time,
                    container_format="matroska" if Path(outs[m]).suffix == ".mkv" else "mp4",
                    label=f"{src}: {m} output",
                    pts_origin=pts_origin,
                    index_origin=start,
                )
            )
        wt = _WriterThread(writers, batch=reader.chunk_size)
        written = {m: 0 for m in methods}

        def render(plans: list[FramePlan]) -> None:
            t_r = time.perf_counter()
            for plan in plans:
                idx, frame, pts = pending.popleft()
                assert idx == plan.index, (idx, plan.index)
                if not (start <= idx < stop):
                    continue  # context frame: analyzed, not written
                seg.frames_read += 1
                for m in methods:
                    if plan.decision == FrameDecision.FAIL_CLOSED:
                        if cfg.track.fail_closed == "drop":
                            continue
                        if cfg.track.fail_closed == "redact":
                            wt.put(m, redact_frame(frame, redact_color), pts)
                            written[m] += 1
                            continue
                    out = comp.anonymizers[m].apply(frame, plan.faces)
                    if fixed:  # burnt-in text at known places: every frame, every method
                        # (never into the decoded frame itself, which every method shares)
                        out = fill_fixed(out.copy() if out is frame else out, fixed, cfg.anonymize.fixed_color)
                    wt.put(m, out, pts)
                    written[m] += 1
                book.add(plan)
            timings.add("render", time.perf_counter() - t_r)

        t_loop = time.perf_counter()
        try:
            for batch in prefetch(reader, maxsize=2):
                t_a = time.perf_counter()
                obs = analyzer.analyze(batch.frames, batch.start)
                timings.add("analyze", time.perf_counter() - t_a)
                planner.add(obs)
                pending.extend(zip(batch.indices(), batch.frames, batch.pts))
                render(planner.ready())
                if progress:
                    progress(sum(1 for i in batch.indices() if start <= i < stop))
            t_a = time.perf_counter()
            planner.add(analyzer.finish())  # the last batch in the worker, the frames after the last keyframe
            timings.add("analyze", time.perf_counter() - t_a)
            render(planner.finish())
        finally:
            analyzer.close()
            t_c = time.perf_counter()
            wt.close()
            timings.add("encode_tail", time.perf_counter() - t_c)
        for w in writers.values():
            w.close()
        timings.add("stream", time.perf_counter() - t_loop)

    seg.written = written
    seg.counts = dict(book.counts)
    seg.counts.update({k: int(v) for k, v in analyzer.counts.items()})
    seg.counts["frames_rescaled"] = reader.stats.rescaled_in(start, stop)  # a mid-stream resolution change (deid.io.decode)
    seg.partial = reader.stats.partial
    seg.error = reader.stats.error
    return seg


def verify_output(path: str | Path, expected_frames: int, what: str) -> None:
    """An encoded output must hold exactly the frames we wrote; returns its probe."""
    info = probe(path)
    if info.frame_count != expected_frames:
        raise DeidError(f"{what}: output has {info.frame_count} frames after encoding, expected {expected_frames}")
    return info


def expected_frames(frames_read: int, counts: dict[str, int], cfg: Config) -> int:
    return frames_read - (counts.get("frames_fail_closed", 0) if cfg.track.fail_closed == "drop" else 0)


def _warn_mostly_masked(src: str, stats: dict[str, Any]) -> None:
    """A swap output whose faces are mostly masked (the gate found the swapped face still
    too close to the patient, or the swap failed) is safe but not what was asked for."""
    faces = int(stats.get("faces") or 0)
    masked = int(stats.get("faces_masked_gate") or 0) + int(stats.get("faces_masked_swap_failed") or 0)
    if faces and masked > faces / 2:
        log.warning("%s: the swap replaced %d of %d face(s); %d were masked instead (the gate found the swapped face still "
                    "near the patient's, or the swap failed: an undertrained model, e.g. a short swap.max_minutes; see the "
                    "audit record's anonymizer_stats)", src, int(stats.get("faces_swapped") or 0), faces, masked)


#: what to change when the leak audit refuses a method's output
_STRONGER = {
    "blur": "Raise anonymize.blur.strength (sigma as a fraction of the head region)",
    "pixelate": "Lower anonymize.pixelate.blocks (fewer blocks across the head)",
    "mask": "Check the frames named (a mask hides what its region covers: a face outside every region was missed)",
    "swap": "Train longer (swap.max_minutes) or choose another donor",
}


def _advice(method: str, rep: dict[str, Any]) -> str:
    """What to do about a leak: a face outside every region was missed (no method
    strength hides it); one inside its region was not hidden enough."""
    missed = rep.get("leak_frames_missed") or []
    if missed:
        return (f"In frames {missed[:10]} the face lay outside every region: the detector and tracker missed it, and a "
                "stronger method would not hide it. Run `deid -v anonymize` and check those frames; lower "
                "detect.min_score, or keep detect.extra (CenterFace) on more frames (detect.extra_every), or fill a "
                "fixed place with anonymize.fixed_regions")
    return _STRONGER.get(method, "Use a stronger method")


def finalize_outputs(
    src: str,
    tmp: dict[str, Path],
    outs: dict[str, Path],
    res: VideoResult,
    cfg: Config,
    comp: Components,
    book: Any,
    timings: Timings,
    want_sha: bool = True,
    input_sha256: str | None = None,
    method_hashes: dict[str, str] | None = None,
) -> None:
    """Verify, leak-audit and write audit records for finished temporaries (``tmp``);
    raises (and the caller's atomic contexts delete everything) on any problem. The
    caller publishes ``tmp`` -> ``outs`` after this returns. ``input_sha256``: the
    input's hash when the caller already has it (else computed when ``want_sha``)."""
    methods = list(outs)
    out_info = {m: verify_output(tmp[m], res.outputs_written[m], f"{src} ({m})") for m in methods}
    leak_reports: dict[str, dict[str, Any]] = {}
    if cfg.audit.leak_check:
        from .audit import leak_audit

        t_l = time.perf_counter()
        reference: dict = {}  # the input side, computed once for all the video's outputs
        n_in = res.info.frame_count if res.info is not None else None  # (probes scan the whole file)
        # as many frames as render_segment kept the plans of (more for a long video)
        audit_cfg = cfg.audit.for_video(res.info.frame_count, res.info.fps) if res.info is not None else cfg.audit
        for m in methods:
            rep = leak_audit(src, tmp[m], audit_cfg, comp.identity, plans=book.sampled, reference=reference,
                             rows=getattr(book, "rows", None), dropped=cfg.track.fail_closed == "drop",
                             frame_counts=(n_in, out_info[m].frame_count))
            leak_reports[m] = rep
            if rep.get("text_regions"):
                log.warning("%s (%s): text stays at the same place in the output, at %s (fractions of the frame): if it "
                            "names the patient (a device's name banner, a date), fill it with anonymize.fixed_regions "
                            "(`deid overlays` proposes the boxes)", src, m, rep["text_regions"])
            if rep["leaks"] > 0 and cfg.audit.on_leak == "fail":
                raise LeakDetectedError(
                    f"{src}: leak audit found {rep['leaks']} face(s) in the {m} output still matching the input "
                    f"(frames {rep['leak_frames'][:10]}); nothing was written. {_advice(m, rep)} or "
                    "set audit.on_leak=flag to keep the output for inspection"
                )
        timings.add("leak_audit", time.perf_counter() - t_l)
    input_sha = input_sha256 if input_sha256 is not None else (sha256_file(src) if want_sha else "")
    chash = config_hash(cfg)
    for m in methods:
        stats = comp.anonymizers[m].stats() if hasattr(comp.anonymizers[m], "stats") else {}
        if m == "swap":
            _warn_mostly_masked(src, stats)
        res.outputs.append(MethodOutput(m, str(outs[m]), str(audit_path(outs[m])), res.outputs_written[m], leak_reports.get(m, {}), stats,
                                        sha256_file(tmp[m]), out_info[m].has_audio))
    res.status = "partial" if res.status == "partial" else "done"
    from .archive import method_config_hash
    from .audit import build_audit_record, write_frames_table

    for mo in res.outputs:
        write_frames_table(frames_path(mo.path), book.rows, mo.method)
        # every record says which settings shaped it (the archive passes its rows' hashes,
        # the donor of the row included): --skip-existing and the archive's rerun compare it
        mhash = (method_hashes or {}).get(mo.method) or method_config_hash(cfg, mo.method)
        write_text_atomic(mo.audit_path, build_audit_record(res, mo, cfg, input_sha, chash, timings, method_hash=mhash))


def _run(
    src: str,
    info: VideoInfo,
    outs: dict[str, Path],
    cfg: Config,
    comp: Components,
    res: VideoResult,
    timings: Timings,
    progress: Callable[[int], None] | None,
    keep_plans: bool,
    want_sha: bool,
    input_sha256: str | None = None,
) -> None:
    with contextlib.ExitStack() as stack:
        tmp = {m: stack.enter_context(atomic_output(p)) for m, p in outs.items()}
        # timestamps count from the input's first frame even when that frame is not written
        # (fail_closed=drop), as kept audio does (it moves back by info.start_time)
        origin = info.start_pts if cfg.io.timing == "keep" else None
        seg = render_segment(src, info, tmp, cfg, comp, timings=timings, progress=progress, keep_plans=keep_plans,
                             pts_origin=origin)
        res.frames_read = seg.frames_read
        res.counts = seg.counts
        if seg.partial:
            res.status = "partial"
            res.error = seg.error
            res.error_kind = "partial"
        expect = expected_frames(seg.frames_read, seg.counts, cfg)
        for m, n in seg.written.items():
            if n != expect:
                raise DeidError(f"{src}: wrote {n} frames for {m}, expected {expect}")
        res.outputs_written = dict(seg.written)
        # all checks pass inside finalize_outputs; then the `with` exit renames the
        # temporaries into place (atomic), so a published video always has its audit
        finalize_outputs(src, tmp, outs, res, cfg, comp, seg.book, timings, want_sha, input_sha256=input_sha256)
    if keep_plans:
        res.plans = seg.book.plans
