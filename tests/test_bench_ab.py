"""bench.ab's plan digest: the same regions give the same digest whatever their order or
track ids; a moved box, a different source or decision does not."""

import numpy as np

from bench.ab import plans_digest
from deid.types import BoxSource, FaceRegion, FrameDecision, FramePlan


def plan(boxes, ids=(1, 2), decision=FrameDecision.OK, source=BoxSource.DETECTED):
    faces = [FaceRegion(np.asarray(b, np.float32), track_id=i, source=source) for b, i in zip(boxes, ids)]
    return [FramePlan(0, tuple(faces), decision, True)]


A, B = [10, 10, 50, 50], [100, 20, 140, 70]


def test_order_and_track_ids_do_not_matter():
    assert plans_digest(plan([A, B])) == plans_digest(plan([B, A], ids=(7, 3)))


def test_regions_sources_and_decisions_do():
    base = plans_digest(plan([A, B]))
    assert plans_digest(plan([A, [100, 20, 141, 70]])) != base
    assert plans_digest(plan([A, B], source=BoxSource.HELD)) != base
    assert plans_digest(plan([A, B], decision=FrameDecision.FAIL_CLOSED)) != base
    assert plans_digest(plan([A])) != base
