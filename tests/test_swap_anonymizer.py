"""SwapAnonymizer: gate fallback to mask, gate sampling, other-faces policy, failures, stats."""

from __future__ import annotations

import numpy as np
import pytest

from deid.anonymize.swap import GATE_RECOVER, SwapAnonymizer
from deid.config import Config
from deid.errors import ConfigError
from deid.swap.convert import Converter
from deid.swap.testing import StillPatientEncoder, SyntheticLandmarker, train_tiny_model
from deid.swap.train import load_model
from deid.testing import draw_frame
from deid.track.boxes import pad_face_box
from deid.types import BoxSource, FaceRegion

W, H, N = 160, 120, 12


class _ScriptedEncoder:
    """Distances from a script: ``far`` says every output face is far from the patient,
    ``fail_first=k`` says the first k checks still match. Embeds a face as its box's x centre
    so two faces side by side are two people."""

    name = "scripted"
    dim = 1
    threshold = 0.6

    def __init__(self, fail_first: int = 0, patient_x: float | None = None, pass_distance: float = 1.0):
        self.fail_first = fail_first
        self.pass_distance = pass_distance
        self.patient_x = patient_x
        self.checks = 0

    def embed(self, frames, boxes):
        return [np.asarray([[(b[0] + b[2]) / 2.0] for b in np.asarray(bs).reshape(-1, 4)], np.float32) for bs in boxes]

    def distance(self, a, b):
        a, b = np.asarray(a).reshape(-1, 1), np.asarray(b).reshape(-1, 1)
        if self.patient_x is not None:  # identity by position: same place = same person
            return (np.abs(a - b.T) > 5).astype(np.float32)
        self.checks += 1
        still = self.checks <= self.fail_first
        return np.full((len(a), len(b)), 0.0 if still else self.pass_distance, np.float32)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return train_tiny_model(tmp_path_factory.mktemp("tiny"), steps=4)


@pytest.fixture(scope="module")
def converter(model_dir):
    model, _ = load_model(model_dir)
    return Converter(model)


def _frames(n: int = N):
    out = []
    for i in range(n):
        img, box = draw_frame(i, n, W, H)
        out.append((img, [FaceRegion(box=pad_face_box(box, 0.3, 0.55, 0.25), face_box=box, track_id=7)]))
    return out


def _anon(converter, identity, refs=None, **overrides):
    cfg = Config().replace(*[f"swap.{k}={v}" for k, v in overrides.items()])
    if refs is None:
        refs = np.zeros((3, identity.dim), np.float32)
    return SwapAnonymizer(cfg, converter=converter, landmarker=SyntheticLandmarker(), identity=identity, references=refs)


def test_gate_falls_back_to_mask_when_the_swap_still_matches(converter):
    anon = _anon(converter, StillPatientEncoder())
    frames = _frames()
    for img, faces in frames:
        out = anon.apply(img, faces)
        b = faces[0].box
        cy, cx = int((b[1] + b[3]) / 2), int((b[0] + b[2]) / 2)
        assert np.all(out[cy - 2 : cy + 3, cx - 2 : cx + 3] == 0)  # the mask's colour, not a face
    s = anon.stats()
    assert s["faces"] == N and s["faces_swapped"] == 0 and s["faces_masked_gate"] == N
    assert s["gate_checks"] == N and s["gate_failures"] == N  # a failed track is checked every frame
    assert s["gate_min_distance"] == 0.0


@pytest.mark.parametrize("distance, checked_frames", [(0.70, [0, 4, 8]), (1.0, [0, 8])])
def test_passing_swap_is_gated_on_a_sample_of_frames(converter, distance, checked_frames):
    """Near the limit (0.65) every gate_every-th frame; far above it the interval doubles."""
    enc = _ScriptedEncoder(pass_distance=distance)
    anon = _anon(converter, enc, gate_every=4)
    changed = 0
    for img, faces in _frames():
        out = anon.apply(img, faces)
        fb = faces[0].face_box.astype(int)
        changed += int(np.abs(out[fb[1] : fb[3], fb[0] : fb[2]].astype(int) - img[fb[1] : fb[3], fb[0] : fb[2]]).mean() > 3)
        assert np.array_equal(out[:5, :5], img[:5, :5])  # far from the face nothing changes
    s = anon.stats()
    assert s["faces_swapped"] == N and s["faces_masked_gate"] == 0 and changed == N
    assert s["gate_checks"] == len(checked_frames) and s["gate_min_distance"] == pytest.approx(distance)


def test_failed_track_is_gated_every_frame_until_it_recovers(converter):
    enc = _ScriptedEncoder(fail_first=2)  # distance() is called twice per check (same place + references)
    anon = _anon(converter, enc, gate_every=50)
    for img, faces in _frames(N):
        anon.apply(img, faces)
    s = anon.stats()
    assert s["gate_failures"] == 1 and s["faces_masked_gate"] == 1
    # check 1 fails, then every frame until GATE_RECOVER passes, then back to sampling (every 50)
    assert s["gate_checks"] == 1 + GATE_RECOVER
    assert s["faces_swapped"] == N - 1


@pytest.mark.parametrize("overrides", [{"gate_every": 1}, {}], ids=["gate_every=1", "default"])
def test_gate_every_1_checks_every_frame(converter, overrides):
    """Every frame, even when each check passes far above the limit (no doubling): the
    default since the identity model runs on torch."""
    anon = _anon(converter, _ScriptedEncoder(pass_distance=1.0), **overrides)
    for img, faces in _frames(6):
        anon.apply(img, faces)
    assert anon.stats()["gate_checks"] == 6


def test_gate_off_swaps_without_checks(converter):
    enc = StillPatientEncoder()
    anon = _anon(converter, enc, gate="false")
    for img, faces in _frames(4):
        anon.apply(img, faces)
    s = anon.stats()
    assert s["gate_checks"] == 0 and s["faces_swapped"] == 4 and not s["gate"]


@pytest.mark.parametrize("policy, expect_dark", [("blur", False), ("mask", True)])
def test_other_faces_follow_the_policy(converter, policy, expect_dark):
    img, box = draw_frame(0, 10, 320, 120)
    img = img.copy()
    # a second person: the same drawn face copied 150 px to the right
    x1, y1, x2, y2 = box.astype(int)
    img[y1:y2, x1 + 150 : x2 + 150] = img[y1:y2, x1:x2]
    box2 = box + np.array([150, 0, 150, 0], np.float32)
    faces = [FaceRegion(box=pad_face_box(b, 0.3, 0.55, 0.25), face_box=b, track_id=k) for k, b in enumerate((box, box2))]
    enc = _ScriptedEncoder(patient_x=float((box[0] + box[2]) / 2))
    refs = np.array([[(box[0] + box[2]) / 2]], np.float32)
    anon = _anon(converter, enc, refs=refs, other_faces=policy, gate="false")  # identity here is by position only
    out = anon.apply(img, faces)
    s = anon.stats()
    assert s["faces_other"] == 1 and s["faces_swapped"] == 1 and s["identity_checks"] == 2
    cx, cy = int((box2[0] + box2[2]) / 2), int((box2[1] + box2[3]) / 2)
    centre = out[cy - 2 : cy + 3, cx - 2 : cx + 3]
    assert bool(np.all(centre == 0)) == expect_dark
    assert not np.array_equal(centre, img[cy - 2 : cy + 3, cx - 2 : cx + 3])


def test_faces_that_cannot_be_aligned_are_masked(converter):
    anon = _anon(converter, _ScriptedEncoder())
    img, box = draw_frame(3, 10, W, H)
    pose_only = FaceRegion(box=pad_face_box(box, 0.3, 0.55, 0.25), source=BoxSource.POSE, track_id=1)
    tiny = FaceRegion(box=np.array([5, 5, 9, 9], np.float32), face_box=np.array([5, 5, 8, 8], np.float32), track_id=2)
    tinier = FaceRegion(box=np.array([5, 5, 8, 8], np.float32), face_box=np.array([5, 5, 7, 7], np.float32), track_id=2)
    anon.apply(img, [pose_only])  # one face a frame: the patient (single-person clip)
    anon.apply(img, [tiny])
    anon.apply(img, [tinier])
    s = anon.stats()
    assert s["faces_masked_swap_failed"] == 3 and s["faces_swapped"] == 0
    assert "head placed from body keypoints only" in s["swap_failed_reasons"]
    # one key for every face too small, whatever its size (not one per measured tenth of a pixel)
    small = {k: v for k, v in s["swap_failed_reasons"].items() if k.startswith("face too small")}
    assert list(small.values()) == [2], s["swap_failed_reasons"]


def test_no_faces_returns_an_unchanged_copy_and_reset_clears_counts(converter):
    anon = _anon(converter, _ScriptedEncoder())
    img, _ = draw_frame(0, 10, W, H)
    out = anon.apply(img, [])
    assert out is not img and np.array_equal(out, img)
    for f, faces in _frames(3):
        anon.apply(f, faces)
    assert anon.stats()["faces"] == 3
    anon.reset()
    assert anon.stats()["faces"] == 0 and anon.stats()["frames"] == 0


def test_swap_without_a_model_explains_how_to_get_one():
    with pytest.raises(ConfigError, match="swap.model_dir"):
        SwapAnonymizer(Config())


def test_registry_builds_the_anonymizer_from_a_model_dir(model_dir, tmp_path):
    from deid.anonymize import build_anonymizer
    from deid.swap.donors import Consent, DonorLibrary
    from deid.swap.testing import write_synthetic_donor

    np.save(model_dir / "references.npy", np.zeros((2, 67), np.float32))
    # the model's donor ("synthetic") must have a valid consent today in the library used
    consent = Consent.parse("version: 1\nkind: person\nwho: Syn Thetic\ngiven: 2025-01-01\nscope: [face-swap-donor]\n"
                            "expires: 2099-01-01\n")
    DonorLibrary(tmp_path / "lib").add("synthetic", [write_synthetic_donor(tmp_path / "donor", n=8)], consent)
    cfg = Config().replace(f"swap.model_dir={model_dir}", "swap.landmarks=synthetic", "audit.identity_backend=patch",
                           f"swap.donor_library={tmp_path / 'lib'}")
    anon = build_anonymizer("swap", cfg)
    img, faces = _frames(1)[0]
    out = anon.apply(img, faces)
    assert out.shape == img.shape and out.dtype == np.uint8
    assert anon.stats()["faces"] == 1 and anon.stats()["preset"] == "tiny"


def test_track_states_compare_by_identity():
    """Regression: two live track states with array fields must not be compared
    element-wise (list.remove raised 'truth value of an array is ambiguous')."""
    import numpy as np

    from deid.anonymize.swap import _Track

    a = _Track(np.zeros(4, np.float32), 1, 0)
    b = _Track(np.zeros(4, np.float32), 1, 0)
    live = [a, b]
    live.remove(b)
    assert live == [a] and a != b


def test_a_pose_region_overlapping_a_swapped_face_does_not_paint_over_it(converter):
    """A head placed from body keypoints beside the swapped face (the pose model's head a
    little off, or a neighbour's head touching it) is masked or blurred — but not over
    the pixels the swap drew for a face that passed the gate; a swap the gate refused is
    masked whole."""
    img, box = draw_frame(3, 10, W, H)
    cx = float(box[0] + box[2]) / 2
    patient = FaceRegion(box=pad_face_box(box, 0.3, 0.55, 0.25), face_box=box, track_id=7)
    w = box[2] - box[0]
    beside = FaceRegion(box=np.array([box[0] - 0.8 * w, box[1] - 10, box[0] + 0.5 * w, box[3] + 10], np.float32),
                        source=BoxSource.POSE, track_id=8)
    refs = np.array([[cx]], np.float32)

    def anon(**kw):
        return _anon(converter, _ScriptedEncoder(patient_x=cx), refs=refs, gate="false", **kw)

    alone = anon().apply(img, [patient])
    for policy in ("mask", "blur"):
        a = anon(other_faces=policy)
        both = a.apply(img, [patient, beside])
        drawn = np.any(alone != img, axis=2)  # what the swap changed
        x1, y1, x2, y2 = beside.box.clip(0).astype(int)
        inside = np.zeros_like(drawn)
        inside[y1:y2, x1:x2] = True
        assert (drawn & inside).sum() > 10  # the two regions overlap on swapped pixels
        assert np.array_equal(both[drawn & inside], alone[drawn & inside]), policy  # kept, not painted over
        assert np.any(both[inside & ~drawn] != img[inside & ~drawn]), policy  # the rest is anonymized
        assert a.stats()["mask_kept_swapped_pixels"] > 0
    # the gate refuses the swap: the patient's region is masked whole, swapped pixels included
    refused = _anon(converter, _ScriptedEncoder(fail_first=99), gate_every=1).apply(img, [patient])
    assert (refused[drawn] < 5).all()
