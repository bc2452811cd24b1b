"""Behaviour of the identity backends on real photos (../shared/media/faces)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from conftest import media_path
from deid.identity.reference import find_and_embed, load_rgb, reference_embeddings
from deid.registry import IDENTITY_ENCODERS

pytestmark = pytest.mark.media


@pytest.fixture(scope="module")
def dlib_encoder():
    return IDENTITY_ENCODERS.create("dlib")


@pytest.fixture(scope="module")
def faces(dlib_encoder):
    """name -> (boxes, embeddings) for every photo, found without a given box."""
    names = ["obama", "obama2", "obama3", "biden", "two_people"]
    imgs = [load_rgb(media_path(f"faces/{n}.jpg")) for n in names]
    return dict(zip(names, find_and_embed(dlib_encoder, imgs, upsample=1)))


def test_one_face_per_portrait_two_in_group_photo(faces):
    for n in ("obama", "obama2", "obama3", "biden"):
        boxes, emb = faces[n]
        assert boxes.shape == (1, 4) and emb.shape == (1, 128), n
        assert np.isfinite(emb).all(), n
    boxes, emb = faces["two_people"]
    assert boxes.shape == (2, 4) and emb.shape == (2, 128) and np.isfinite(emb).all()


def test_same_person_below_threshold_others_above(faces, dlib_encoder):
    thr = dlib_encoder.threshold
    obamas = [faces[n][1] for n in ("obama", "obama2", "obama3")]
    for a, b in itertools.combinations(obamas, 2):
        assert dlib_encoder.distance(a, b)[0, 0] < thr
    for a in obamas:
        assert dlib_encoder.distance(a, faces["biden"][1])[0, 0] > thr
    # the group photo holds one face matching obama and one matching biden, and they differ
    two = faces["two_people"][1]
    d_obama = dlib_encoder.distance(two, obamas[0])[:, 0]
    d_biden = dlib_encoder.distance(two, faces["biden"][1])[:, 0]
    assert sorted((d_obama < thr).tolist()) == [False, True]
    assert sorted((d_biden < thr).tolist()) == [False, True]
    assert dlib_encoder.distance(two[:1], two[1:])[0, 0] > thr


def test_given_boxes_match_found_faces(faces, dlib_encoder):
    """embed() with the detector's boxes gives the find_and_embed() descriptors (one path)."""
    img = load_rgb(media_path("faces/obama.jpg"))
    boxes, emb = faces["obama"]
    again = dlib_encoder.embed([img], [boxes])[0]
    np.testing.assert_allclose(again, emb, atol=1e-6)


def test_reference_embeddings_and_no_face_error(dlib_encoder, tmp_path):
    from deid.errors import InvalidInputError

    refs = reference_embeddings(dlib_encoder, [media_path("faces/obama.jpg"), media_path("faces/obama2.jpg")])
    assert refs.shape == (2, 128) and refs.dtype == np.float32
    blank = tmp_path / "blank.png"
    import cv2

    cv2.imwrite(str(blank), np.full((200, 200, 3), 127, np.uint8))
    with pytest.raises(InvalidInputError, match="no face found"):
        reference_embeddings(dlib_encoder, [blank])
    with pytest.raises(InvalidInputError, match="not found"):
        load_rgb(tmp_path / "missing.jpg")


def test_attack_on_unprocessed_photos_finds_the_patient(faces, dlib_encoder):
    from deid.metrics.reid import reid_attack

    gallery = np.concatenate([faces["obama"][1], faces["biden"][1]])
    probes = np.concatenate([faces["obama2"][1], faces["obama3"][1]])
    res = reid_attack(gallery, ["patient", "other"], probes, "patient", distance=dlib_encoder.distance)
    assert res.rank1 == 1.0 and res.mean_ap == 1.0 and res.chance_rank1 == 0.5
