"""Face swap anonymizer: the patient's face is replaced by a consenting donor's, with the
patient's pose and expression (Zhu et al., AIES 2020); see :mod:`deid.swap` and docs/swap.md.

Per frame and face region (from the tracker):

1. *who*: faces are followed across frames here (IoU with the previous frame's regions,
   the tracker's id as a hint); each new track is identified once against the patient's
   reference embeddings and re-checked every :data:`RECHECK_FRAMES` frames. With one
   person in the patient's video and one face in the frame, that face is the patient
   without an identity call. Faces that are not the patient's follow ``swap.other_faces``
   (blur by default);
2. *align*: 68 landmarks in the detector's face box (or, between detections, in a box
   around the track's last landmarks), smoothed over time (One-Euro), fitted to the
   template. No landmarks, a degenerate fit, a face too small, a head placed only from
   body keypoints, or landmarks that disagree with the detector's eyes: the swap is not
   attempted and the face is masked (``failed`` in :meth:`stats`);
3. *swap*: one batched forward pass for the frame's faces (shared encoder -> donor
   decoder), colour match, blend (:mod:`deid.swap.convert`);
4. *gate*: the output face is checked against the patient (:mod:`deid.swap.gate`) on
   every frame by default (``swap.gate_every: 1``): a check is a dlib embedding pair per
   face, ~10 ms since the ResNet runs on torch (:mod:`deid.identity.dlib_resnet`; on
   dlib's own forward pass it was 0.1-0.4 s and the gate had to sample). A face that
   fails is masked. ``gate_every`` k > 1 samples again: the first frame of a track,
   then every k-th frame; a check that passes by a wide margin (:data:`GATE_SAFE`
   above the limit) doubles that track's interval, up to :data:`GATE_MAX_FACTOR` x k; a
   check near the limit resets it; a failed track is checked on *every* frame until
   :data:`GATE_RECOVER` consecutive passes.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError
from ..types import BoxSource, FaceRegion, check_frame

log = logging.getLogger(__name__)

#: frames after which a track's "is this the patient?" answer is checked again
RECHECK_FRAMES = 50
#: consecutive gate passes before a track that failed goes back to sampled gating
GATE_RECOVER = 5
#: a passing check this far above the gate's limit doubles the track's check interval ...
GATE_SAFE = 0.10
#: ... up to this many times ``swap.gate_every``
GATE_MAX_FACTOR = 4
#: a state unseen for this many frames is forgotten
FORGET_FRAMES = 10
#: nominal frame interval for the One-Euro filter (the anonymizer sees no timestamps)
FRAME_DT = 1.0 / 30.0
#: sp68 eye centres must lie within this fraction of the eye distance of the detector's eyes
EYE_AGREEMENT = 0.35


@dataclass(eq=False)  # identity equality: fields hold arrays (list.remove must not compare them)
class _Track:
    box: np.ndarray
    track_id: int
    last_seen: int
    age: int = 0
    is_patient: bool | None = None
    checked_at: int = -(10**9)
    landmarks: np.ndarray | None = None
    filt: Any = None
    gate_failed: bool = False
    pass_streak: int = 0
    last_gate: int = -(10**9)
    interval: int = 0  # frames until the next check (0 = not set: swap.gate_every)
    gate_count: int = 0


@dataclass
class _Stats:
    faces: int = 0
    swapped: int = 0
    masked_gate: int = 0
    masked_failed: int = 0
    mask_kept_swap_px: int = 0  # swapped pixels a mask over an overlapping region left alone
    other: int = 0
    gate_checks: int = 0
    gate_failures: int = 0
    identity_checks: int = 0
    tracks: int = 0
    frames: int = 0
    min_gate_distance: float = math.inf
    failed_why: Counter = field(default_factory=Counter)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    u = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / u) if u > 0 else 0.0


class SwapAnonymizer:
    """``apply(frame, faces) -> frame`` with a trained per-patient model.

    Build it with :func:`deid.swap.session.swap_session` (trains, yields this, deletes
    the model) or :meth:`from_dir` (a model folder from ``deid swap train``). Built
    from a config alone it loads ``swap.model_dir`` or explains how to get a model."""

    name = "swap"

    def __init__(
        self,
        cfg: Any = None,
        *,
        converter: Any = None,
        landmarker: Any = None,
        identity: Any = None,
        references: np.ndarray | None = None,
        single_person: bool = True,
        info: dict[str, Any] | None = None,
        **_: Any,
    ):
        from ..config import Config
        from .blur import BlurAnonymizer
        from .mask import MaskAnonymizer

        full = cfg if isinstance(cfg, Config) else Config()
        self.cfg = full.swap
        self.track_cfg = full.track
        if converter is None:
            if not self.cfg.model_dir:
                raise ConfigError(
                    "the swap anonymizer needs a model trained for this patient: use `deid anonymize --method swap "
                    "--donor NAME` (trains one per video and deletes it afterwards) or set swap.model_dir to a folder "
                    "made by `deid swap train`"
                )
            from ..swap.session import check_kept_model

            check_kept_model(self.cfg.model_dir, full)  # the donor's consent must still hold
            other = SwapAnonymizer.from_dir(self.cfg.model_dir, full, identity=identity, landmarker=landmarker)
            self.__dict__.update(other.__dict__)
            return
        self.converter = converter
        if landmarker is None:
            from ..swap.align import build_landmarker

            landmarker = build_landmarker(self.cfg.landmarks)
        self.landmarker = landmarker
        self.size = int(converter.size)
        self.single_person = bool(single_person)
        self.info = dict(info or {})
        self.masker = MaskAnonymizer(full.anonymize.mask)
        self.blurrer = BlurAnonymizer(full.anonymize.blur)
        self.gate = None
        if identity is not None:
            from ..swap.gate import IdentityGate

            from ..identity import effective_threshold

            self.gate = IdentityGate(identity, references, threshold=effective_threshold(identity, getattr(full.audit, "threshold", None)))
        elif self.cfg.gate:
            log.warning("swap: no identity encoder given; the identity gate is off (swap.gate=true was asked for)")
        self.reset()

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_dir(cls, model_dir: str | Path, cfg: Any = None, *, identity: Any = None, landmarker: Any = None, device: Any = None) -> "SwapAnonymizer":
        """Load a model folder (``model.pt``, ``references.npy``, ``session.json``)."""
        from ..config import Config
        from ..errors import ModelWeightsError
        from ..swap.convert import Converter
        from ..swap.train import load_model, pick_device

        full = cfg if isinstance(cfg, Config) else Config()
        d = Path(model_dir)
        if not (d / "model.pt").is_file():
            raise ModelWeightsError(f"{d}: no model.pt; train one with `deid swap train --patient VIDEO --donor NAME --out {d}`")
        dev = pick_device(device)
        model, _meta = load_model(d, dev)
        refs = np.load(d / "references.npy", allow_pickle=False) if (d / "references.npy").is_file() else None
        info = json.loads((d / "session.json").read_text()) if (d / "session.json").is_file() else {}
        if identity is None and (full.swap.gate or refs is not None):
            from ..registry import IDENTITY_ENCODERS

            identity = IDENTITY_ENCODERS.create(full.audit.identity_backend)
        conv = Converter(model, device=dev, colour=full.swap.colour, blend=full.swap.blend, sharpen=full.swap.sharpen)
        return cls(full, converter=conv, landmarker=landmarker, identity=identity, references=refs, single_person=bool(info.get("single_person", True)), info=info)

    # ----------------------------------------------------------------- protocol
    def reset(self) -> None:
        self._tracks: list[_Track] = []
        self._frame = -1
        self._s = _Stats()

    def stats(self) -> dict[str, Any]:
        s = self._s
        out = {
            "frames": s.frames,
            "faces": s.faces,
            "faces_swapped": s.swapped,
            "faces_masked_gate": s.masked_gate,
            "faces_masked_swap_failed": s.masked_failed,
            "mask_kept_swapped_pixels": s.mask_kept_swap_px,
            "faces_other": s.other,
            "other_faces_policy": self.cfg.other_faces,
            "gate": self.gate is not None and self.cfg.gate,
            "gate_every": self.cfg.gate_every,
            "gate_max_interval": self.cfg.gate_every * GATE_MAX_FACTOR,
            "gate_checks": s.gate_checks,
            "gate_failures": s.gate_failures,
            "gate_min_distance": None if math.isinf(s.min_gate_distance) else round(s.min_gate_distance, 4),
            "identity_checks": s.identity_checks,
            "tracks": s.tracks,
            "swap_failed_reasons": dict(s.failed_why),
        }
        for k in ("donor", "donor_consent_sha256", "donor_kind", "preset", "train_steps", "train_seconds", "patient_model"):
            if k in self.info:
                out[k] = self.info[k]
        return out

    def apply(self, frame: np.ndarray, faces: Sequence[FaceRegion]) -> np.ndarray:
        check_frame(frame)
        self._frame += 1
        self._s.frames += 1
        out = frame.copy()
        if not faces:
            self._forget()
            return out
        tracks = self._associate(faces)
        roles = self._roles(frame, faces, tracks)
        to_swap: list[int] = []
        to_mask: list[int] = []
        to_blur: list[int] = []
        for k, (face, role) in enumerate(zip(faces, roles)):
            self._s.faces += 1
            if role == "patient" or self.cfg.other_faces == "swap":
                to_swap.append(k)
            else:
                self._s.other += 1
                (to_mask if self.cfg.other_faces == "mask" else to_blur).append(k)
        aligned, align_idx = [], []
        for k in to_swap:
            a, why = self._align(frame, faces[k], tracks[k])
            if a is None:
                self._s.masked_failed += 1
                self._s.failed_why[why] += 1
                to_mask.append(k)
            else:
                aligned.append(a)
                align_idx.append(k)
        rects = self.converter.convert(frame, out, aligned)
        swapped = []
        for k, r in zip(align_idx, rects):
            if r is None:
                self._s.masked_failed += 1
                self._s.failed_why["outside the frame"] += 1
                to_mask.append(k)
            else:
                swapped.append(k)
        swapped, gated_out = self._gate(frame, out, faces, tracks, swapped)
        to_mask.extend(gated_out)
        self._s.swapped += len(swapped)
        # The pixels the swap drew for faces that passed the gate are someone else's face
        # already: a masked or blurred region overlapping them (a head placed from body
        # keypoints beside or around the face, which cannot be swapped; another person's
        # face) must not paint over them.
        drawn = None
        if swapped and (to_mask or to_blur):
            rect = dict(zip(align_idx, rects))
            drawn = np.zeros(frame.shape[:2], bool)
            for k in swapped:
                x1, y1, x2, y2 = rect[k]
                drawn[y1:y2, x1:x2] = True
            for k in gated_out:  # a swap the gate refused is masked whole
                if rect.get(k) is not None:
                    x1, y1, x2, y2 = rect[k]
                    drawn[y1:y2, x1:x2] = False
            drawn &= np.any(out != frame, axis=2)
        swap_out = out
        if to_blur:
            out = self.blurrer.apply(out, [faces[k] for k in to_blur])
        if to_mask:
            out = self.masker.apply(out, [faces[k] for k in to_mask])
        if drawn is not None and drawn.any() and out is not swap_out:
            keep = drawn & np.any(out != swap_out, axis=2)
            out[keep] = swap_out[keep]
            self._s.mask_kept_swap_px += int(keep.sum())
        self._forget()
        return out

    # ----------------------------------------------------------------- steps
    def _associate(self, faces: Sequence[FaceRegion]) -> list[_Track]:
        """One state per face: same tracker id, else the best IoU with a recent state."""
        free = list(self._tracks)
        out: list[_Track] = []
        for f in faces:
            best, best_iou = None, 0.3
            for t in free:
                score = 1.0 + _iou(t.box, f.box) if (f.track_id >= 0 and t.track_id == f.track_id) else _iou(t.box, f.box)
                if score > best_iou:
                    best, best_iou = t, score
            if best is None:
                best = _Track(f.box.copy(), int(f.track_id), self._frame)
                self._tracks.append(best)
                self._s.tracks += 1
            else:
                free.remove(best)
            best.box, best.track_id, best.last_seen = f.box.copy(), int(f.track_id), self._frame
            best.age += 1
            out.append(best)
        return out

    def _forget(self) -> None:
        self._tracks = [t for t in self._tracks if self._frame - t.last_seen <= FORGET_FRAMES]

    def _roles(self, frame: np.ndarray, faces: Sequence[FaceRegion], tracks: list[_Track]) -> list[str]:
        if self.gate is None or not len(self.gate.references):
            return ["patient"] * len(faces)  # nothing to tell people apart with: swap all
        if self.single_person and len(faces) == 1:
            return ["patient"]
        need = [k for k, t in enumerate(tracks) if t.is_patient is None or self._frame - t.checked_at >= RECHECK_FRAMES]
        if need:
            boxes = [self._id_box(faces[k]) for k in need]
            self._s.identity_checks += len(need)
            for k, (is_p, _d) in zip(need, self.gate.is_patient(frame, boxes)):
                tracks[k].checked_at = self._frame
                if is_p is not None:
                    tracks[k].is_patient = is_p
        # undecided faces (not embeddable): treated as the patient — they get swapped
        # and gated; a wrongly swapped bystander is still de-identified
        return ["other" if t.is_patient is False else "patient" for t in tracks]

    def _id_box(self, face: FaceRegion) -> np.ndarray:
        if face.face_box is not None:
            return face.face_box
        from ..swap.align import face_box_from_head

        c = self.track_cfg
        return face_box_from_head(face.box, c.pad_side, c.pad_top, c.pad_bottom)

    def _align(self, frame: np.ndarray, face: FaceRegion, track: _Track):
        from ..swap.align import OneEuro, align, box_from_landmarks, five_points

        if face.source == BoxSource.POSE:
            return None, "head placed from body keypoints only"
        if face.face_box is not None:
            box = face.face_box
        elif track.landmarks is not None:
            box = box_from_landmarks(track.landmarks)
        else:
            box = self._id_box(face)
        pts = self.landmarker(frame, [box])[0]
        if face.face_box is None and np.all(np.isfinite(pts)):
            pts = self.landmarker(frame, [box_from_landmarks(pts)])[0]  # refine in a box of the predictor's kind
        if not np.all(np.isfinite(pts)):
            return None, "no landmarks"
        five = five_points(pts)
        iod = float(np.linalg.norm(five[1] - five[0]))
        lm = face.landmarks
        if lm is not None and np.all(np.isfinite(lm[:2])) and iod > 0:
            err = max(float(np.linalg.norm(five[0] - lm[0])), float(np.linalg.norm(five[1] - lm[1]))) / iod
            if err > EYE_AGREEMENT:
                return None, "landmarks disagree with the detector"
        if self.cfg.smooth > 0:
            if track.filt is None:
                track.filt = OneEuro(min_cutoff=self.cfg.smooth, beta=0.5)
            pts = track.filt(pts, FRAME_DT, scale=max(iod, 1.0))
        track.landmarks = pts
        a = align(pts, self.size)
        if not a.ok:
            return None, a.why
        return a, ""

    def _gate(self, frame: np.ndarray, out: np.ndarray, faces: Sequence[FaceRegion], tracks: list[_Track], swapped: list[int]) -> tuple[list[int], list[int]]:
        if self.gate is None or not self.cfg.gate or not swapped:
            return swapped, []
        due = []
        for k in swapped:
            t = tracks[k]
            if t.gate_failed or t.gate_count == 0 or self._frame - t.last_gate >= (t.interval or self.cfg.gate_every):
                due.append(k)
        if not due:
            return swapped, []
        results = self.gate.check(frame, out, [self._id_box(faces[k]) for k in due])
        failed = []
        for k, r in zip(due, results):
            t = tracks[k]
            t.last_gate, t.gate_count = self._frame, t.gate_count + 1
            self._s.gate_checks += 1
            for d in (r.d_same, r.d_ref):
                if not math.isnan(d):
                    self._s.min_gate_distance = min(self._s.min_gate_distance, d)
            if r.passed:
                t.pass_streak += 1
                if t.gate_failed and t.pass_streak >= GATE_RECOVER:
                    t.gate_failed = False
                # risk-based sampling: far from the limit -> check less often (up to
                # GATE_MAX_FACTOR x gate_every); near it -> back to gate_every
                ds = [d for d in (r.d_same, r.d_ref) if not math.isnan(d)]
                k = self.cfg.gate_every
                if k > 1 and ds and min(ds) >= self.gate.limit + GATE_SAFE:  # gate_every=1: every frame, always
                    t.interval = min(k * GATE_MAX_FACTOR, max(k, t.interval or k) * 2)
                else:
                    t.interval = k
            else:
                self._s.gate_failures += 1
                self._s.masked_gate += 1
                t.gate_failed, t.pass_streak, t.interval = True, 0, self.cfg.gate_every
                failed.append(k)
        return [k for k in swapped if k not in failed], failed
