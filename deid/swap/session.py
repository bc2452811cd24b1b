"""One patient's swap session: train, convert, forget.

    with swap_session([video], cfg) as anonymizer:
        process_video(video, out_dir, ["swap"], cfg, components=...)   # uses the anonymizer
    # here the patient's model, face crops and reference embeddings are gone

Irreversibility (issue 5.7): a trained per-patient model can re-create the patient's
face (its patient decoder is exactly that), and the aligned crops and reference
embeddings are biometric data. They live only in a private directory made with
``mkdtemp`` (mode 0700, under ``swap.workdir`` or the system temp dir, never inside an
output directory), and the directory is deleted when the session ends — normally or
by an error — unless ``swap.keep_model`` is set, which logs a warning naming the path.
The donor's consent is checked before any patient data is read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import stat
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from ..errors import InvalidInputError

log = logging.getLogger(__name__)

SESSION_FILE = "session.json"
#: ``session.json``'s "training" while a training runs (the record written before it)
UNFINISHED = "unfinished"
REFERENCES_FILE = "references.npy"


OWNER_FILE = "owner.json"
_PREFIX = "deid-swap-"


def private_dir(parent: str | os.PathLike | None = None, forbid: Sequence[str | os.PathLike] = ()) -> Path:
    """A new directory only the current user can enter (0700), not inside ``forbid``.
    It records its owner (process, host); session directories in the same place whose
    owner died without deleting them (SIGKILL, power loss) are deleted first
    (:func:`remove_orphaned_sessions`)."""
    base = Path(parent).expanduser() if parent else None

    def refuse_inside_forbidden(p: Path) -> None:
        for f in forbid:
            fr = Path(f).expanduser().resolve()
            if p == fr or fr in p.parents:
                raise InvalidInputError(f"swap.workdir {parent} lies inside the output directory {f}; the patient's model must never be written there")

    refuse_inside_forbidden((base or Path(tempfile.gettempdir())).resolve())  # before anything is created there
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    remove_orphaned_sessions(base or tempfile.gettempdir())
    d = Path(tempfile.mkdtemp(prefix=_PREFIX, dir=str(base) if base else None))
    os.chmod(d, stat.S_IRWXU)
    (d / OWNER_FILE).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "created_unix": int(time.time())}))
    try:
        refuse_inside_forbidden(d.resolve())  # a link put in the way meanwhile
    except InvalidInputError:
        shutil.rmtree(d, ignore_errors=True)
        raise
    return d


def _private_tree(d: Path) -> None:
    """Every file under a model folder readable by its owner only (0600, folders 0700): the
    folder itself is private, but a model, face crops and previews copied out of it, or a
    folder opened up by mistake, must not carry world-readable modes with them."""
    for p in [d, *d.rglob("*")]:
        if p.is_symlink():
            continue
        with contextlib.suppress(OSError):
            os.chmod(p, stat.S_IRWXU if p.is_dir() else stat.S_IRUSR | stat.S_IWUSR)


def remove_orphaned_sessions(base: str | os.PathLike) -> list[Path]:
    """Delete ``deid-swap-*`` session directories under ``base`` whose owner process on
    this host is gone: a session killed before it could delete its patient's model and
    face crops. Kept sessions (``swap.keep_model``) and other hosts' are left alone."""
    from ..io.atomic import pid_alive

    removed: list[Path] = []
    host = socket.gethostname()
    try:
        cands = [p for p in Path(base).glob(_PREFIX + "*") if p.is_dir() and not p.is_symlink()]
    except OSError:
        return removed
    for d in cands:
        try:
            own = json.loads((d / OWNER_FILE).read_text())
            if own.get("kept") or own.get("host") != host or pid_alive(int(own["pid"])):
                continue
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not ours to judge (no owner record)
        log.warning("deleting swap session %s: its process (pid %s) ended without deleting it", d, own.get("pid"))
        shutil.rmtree(d, ignore_errors=True)
        removed.append(d)
    return removed


def _mark_kept(d: Path) -> None:
    with contextlib.suppress(OSError, ValueError):
        own = json.loads((d / OWNER_FILE).read_text())
        own["kept"] = True
        (d / OWNER_FILE).write_text(json.dumps(own))


def remove_private_dir(d: str | os.PathLike) -> None:
    """Delete a session directory; raise if anything survives (fail loudly, not silently)."""
    p = Path(d)
    shutil.rmtree(p, ignore_errors=True)
    if p.exists():
        shutil.rmtree(p)  # second try: let the error say what could not be removed


def check_donor_is_not_patient(donor: Any, patient_sha256: Sequence[str], references: np.ndarray, identity: Any, detector: Any,
                               n_frames: int = 8) -> None:
    """Refuse a donor who is the patient: its material is one of the patient's videos, or
    its faces are the patient's (the median distance between the donor's faces and the
    patient's reference embeddings under the recogniser's threshold). A swap onto the
    patient's own face de-identifies nothing; the identity gate would mask most frames,
    but a blurry early model passes it (a registration mistake, not an attack)."""
    from ..errors import DeidError
    from ..evaluate.references import identity_embeddings
    from ..pipeline import sha256_file

    mine = set(patient_sha256)
    for m in donor.media:
        if Path(m).is_file() and sha256_file(m) in mine:
            raise InvalidInputError(f"donor {donor.name!r}: its material {Path(m).name} is the patient's own video; a swap onto "
                                    "the patient's face de-identifies nothing: choose another donor")
    if identity is None or len(references) == 0 or not hasattr(identity, "distance"):
        return
    embs = []
    for m in list(donor.media)[:3]:
        try:
            e = identity_embeddings(m, identity, detector, n_frames)
        except (DeidError, OSError) as err:  # the donor's own checks say what is wrong with its media
            log.debug("donor %s: %s not embedded (%s)", donor.name, m, err)
            continue
        if len(e):
            embs.append(np.asarray(e, np.float32))
    if not embs:
        return
    d = float(np.median(identity.distance(np.concatenate(embs), np.asarray(references, np.float32))))
    if d < float(identity.threshold):
        raise InvalidInputError(f"donor {donor.name!r}: its faces are the patient's (median distance {d:.2f} to the patient's "
                                f"faces, same person below {float(identity.threshold):g}); a swap onto the patient's face "
                                "de-identifies nothing: choose another donor")
    log.info("donor %s: median distance %.2f to the patient's faces", donor.name, d)


def train_patient_model(
    videos: Sequence[str | os.PathLike],
    cfg: Any,
    out_dir: str | os.PathLike,
    *,
    identity: Any = None,
    detector: Any = None,
    landmarker: Any = None,
    library: Any = None,
    device: Any = None,
    progress: bool = False,
    report: Callable[[dict[str, Any]], None] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Everything up to a trained model in ``out_dir``: consent check, face sets,
    reference embeddings, (pre-trained) initialisation, training. Returns the session
    info also written to ``out_dir/session.json``."""
    from ..detect import build_detector
    from ..pipeline import sha256_file
    from .align import build_landmarker
    from .donors import DonorLibrary, donor_faceset
    from .faceset import extract_faceset
    from .pretrain import pretrained_path
    from .train import CHECKPOINT, TrainData, fit, resolve_spec

    sc = cfg.swap
    lib = library or DonorLibrary(sc.donor_library or None)
    donor = lib.get(sc.donor)  # ConsentError before any patient data is read
    spec = resolve_spec(sc)
    out = Path(out_dir)
    resume_from = out / CHECKPOINT if resume and (out / CHECKPOINT).is_file() else None
    trained_on = [sha256_file(v) for v in videos]  # which videos the model is of (a kept model's later use)
    if resume_from is not None:
        # the weights carry every donor and patient they were trained on: a resume against
        # another donor would leave a model of that donor's face whose record names (and
        # whose later use checks the consent of) only the new one
        prev = _read_session(out)
        if not prev.get("donor"):  # fail closed: whose face the weights hold is not known
            raise InvalidInputError(f"{out}: its {SESSION_FILE} does not say which donor the model was trained against "
                                    "(missing or unreadable), so it cannot be resumed with a donor's consent checked; "
                                    "train a new model in a new folder")
        if prev["donor"] != donor.name:
            raise InvalidInputError(f"{out}: its model was trained against donor {prev['donor']!r}, not {donor.name!r}; "
                                    f"resume with --donor {prev['donor']}, or train a new model in a new folder")
        trained_on = list(dict.fromkeys(list(prev.get("patient_inputs_sha256") or []) + trained_on))
    # recorded before training, so that an interrupted training's folder says whose it is;
    # marked unfinished (check_kept_model refuses it) until the full record replaces it
    (out / SESSION_FILE).write_text(json.dumps({"donor": donor.name, "patient_inputs_sha256": trained_on,
                                                "donor_consent_sha256": donor.consent.sha256,
                                                "training": UNFINISHED}, indent=1))
    detector = detector or build_detector(cfg)
    landmarker = landmarker or build_landmarker(sc.landmarks)
    if identity is None:
        # the patient's reference embeddings are taken whether or not the gate will use
        # them: without them a donor who is the patient (swap.gate=false) was not refused
        from ..registry import IDENTITY_ENCODERS

        identity = IDENTITY_ENCODERS.create(cfg.audit.identity_backend)
    t0 = time.perf_counter()
    ext = extract_faceset(list(videos), spec.size, detector=detector, landmarker=landmarker, identity=identity, max_frames=sc.max_frames)
    t_extract = time.perf_counter() - t0
    dfaces = donor_faceset(donor, spec.size, detector=detector, landmarker=landmarker)
    check_donor_is_not_patient(donor, trained_on, ext.references, identity, detector)
    data = TrainData(ext.faceset, dfaces)
    data.save(out / "faces")  # private dir: lets an interrupted `deid swap train` resume
    np.save(out / REFERENCES_FILE, ext.references)
    init = None
    if sc.donor_pretrain:
        p = pretrained_path(donor, spec)
        if not p.is_file() and sc.donor_pretrain_minutes > 0:
            from .pretrain import pretrain_donor

            log.warning(
                "donor %s has no pre-trained %d px model yet: building it once (%.0f min, cached in %s; "
                "`deid donor pretrain %s` does this ahead of time)", donor.name, spec.size, sc.donor_pretrain_minutes, p.parent, donor.name
            )
            pretrain_donor(donor, cfg, minutes=sc.donor_pretrain_minutes, detector=detector, landmarker=landmarker, device=device, progress=progress)
        init = p if p.is_file() else None
    res = fit(data, sc, out, report=report, resume_from=resume_from, init_from=None if resume_from else init, device=device, spec=spec, progress=progress)
    info = {
        "donor": donor.name,
        "patient_inputs_sha256": trained_on,  # every video the weights were trained on (resumes included)
        "donor_consent_sha256": donor.consent.sha256,
        "donor_kind": donor.consent.kind,
        "preset": sc.preset,
        "size": spec.size,
        "train_steps": res.steps,
        "train_seconds": round(res.elapsed_s, 1),
        "train_stopped_by": res.stopped_by,
        "train_device": res.device,
        "init_from_donor_pretrain": init is not None,
        "extract_seconds": round(t_extract, 1),
        "patient_faces": len(ext.faceset),
        "donor_faces": len(dfaces),
        "references": int(len(ext.references)),
        "single_person": ext.stats.rejected.get("other_person", 0) == 0,
        "extract": ext.stats.to_dict(),
        "losses": {k: round(v, 4) for k, v in res.losses.items()},
    }
    (out / SESSION_FILE).write_text(json.dumps(info, indent=1))
    _private_tree(out)
    return info


def _read_session(d: Path) -> dict[str, Any]:
    try:
        info = json.loads((d / SESSION_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def check_kept_model(model_dir: str | os.PathLike, cfg: Any, videos: Sequence[str | os.PathLike] = ()) -> dict[str, Any]:
    """Before a kept model (``swap.model_dir``, made by ``deid swap train``) is used: its
    donor's consent must hold *today* (revoked or expired since the training: refused,
    :class:`deid.errors.ConsentError`), and a video it was not trained on is warned about
    (a patient's model on another person's video swaps the wrong face, and its identity
    gate compares with the wrong person). Returns the model's session info."""
    from ..errors import ConsentError
    from .donors import DonorLibrary

    d = Path(model_dir)
    try:
        info = json.loads((d / SESSION_FILE).read_text())
    except (OSError, ValueError) as e:
        raise ConsentError(f"{d}: no readable {SESSION_FILE} ({e}): cannot tell whose consent the model rests on; "
                           "train it again with `deid swap train`") from None
    if not isinstance(info, dict):
        raise ConsentError(f"{d}/{SESSION_FILE} is not a session record: cannot tell whose consent the model rests on")
    if info.get("training") == UNFINISHED:
        # the record written before training: an interrupted (or refused) training's
        # checkpoint, which no finished training vouched for
        raise InvalidInputError(f"{d}: its training did not finish (interrupted, or refused before it began); finish it "
                                f"with `deid swap train --resume --out {d}` and the same --patient and --donor")
    donor = str(info.get("donor") or "")
    if not donor:
        raise ConsentError(f"{d}/{SESSION_FILE} names no donor: cannot check the consent the model rests on")
    DonorLibrary(cfg.swap.donor_library or None).get(donor)  # ConsentError when revoked, expired, out of scope
    trained_on = set(info.get("patient_inputs_sha256") or [])
    if trained_on and videos:
        from ..pipeline import sha256_file

        other = [str(v) for v in videos if sha256_file(v) not in trained_on]
        if other:
            log.warning("%s: the swap model in %s was trained on other video(s); use it only for the same patient's videos "
                        "(on another person it swaps the wrong face and its identity gate compares with the wrong person)",
                        ", ".join(other), d)
    return info


@contextlib.contextmanager
def swap_session(
    videos: Sequence[str | os.PathLike],
    cfg: Any,
    *,
    identity: Any = None,
    detector: Any = None,
    landmarker: Any = None,
    library: Any = None,
    device: Any = None,
    forbid: Sequence[str | os.PathLike] = (),
    progress: bool = False,
    report: Callable[[dict[str, Any]], None] | None = None,
) -> Iterator[Any]:
    """Train a model for the patient in ``videos`` against ``cfg.swap.donor``, yield its
    :class:`deid.anonymize.swap.SwapAnonymizer`, then delete everything patient-specific
    (see the module doc). With ``swap.model_dir`` set, that model is used instead and
    left in place (it belongs to whoever trained it)."""
    from ..anonymize.swap import SwapAnonymizer

    sc = cfg.swap
    if identity is None and sc.gate:
        from ..registry import IDENTITY_ENCODERS

        identity = IDENTITY_ENCODERS.create(cfg.audit.identity_backend)
    if sc.model_dir:
        check_kept_model(sc.model_dir, cfg, videos)
        yield SwapAnonymizer.from_dir(sc.model_dir, cfg, identity=identity, landmarker=landmarker, device=device)
        return
    work = private_dir(sc.workdir or None, forbid=forbid)
    try:
        train_patient_model(
            videos, cfg, work, identity=identity, detector=detector, landmarker=landmarker, library=library, device=device, progress=progress, report=report
        )
        anon = SwapAnonymizer.from_dir(work, cfg, identity=identity, landmarker=landmarker, device=device)
        anon.info["patient_model"] = "kept (swap.keep_model)" if sc.keep_model else "deleted after the session"
        yield anon
    finally:
        if sc.keep_model:
            _mark_kept(work)
            log.warning(
                "swap.keep_model is set: the patient's model, face crops and reference embeddings remain in %s "
                "(mode 0700). They can re-create the patient's face: delete the folder when done.",
                work,
            )
        else:
            remove_private_dir(work)
