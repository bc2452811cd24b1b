"""Pure archive logic: segment planning, config hashes, status table, stats merging, progress."""

import pytest

from deid.archive import (
    ArchiveProgress,
    StatusTable,
    check_segmenting,
    merge_stats,
    method_config_hash,
    plan_segments,
)
from deid.config import Config
from deid.errors import ConfigError, InvalidInputError


@pytest.mark.parametrize("n,size,count", [(1, 300, 1), (300, 300, 1), (301, 300, 1), (374, 300, 1), (375, 300, 2),
                                          (1000, 300, 4), (960, 300, 3), (90, 0, 1), (61, 20, 3)])
def test_segments_tile_the_video_exactly_once(n, size, count):
    segs = plan_segments(n, size, overlap=48)
    assert len(segs) == count
    assert segs[0].start == 0 and segs[-1].stop == n
    for a, b in zip(segs, segs[1:]):
        assert a.stop == b.start, "contiguous, no frame written twice"
    assert [s.index for s in segs] == list(range(count))
    assert all(s.context == 48 for s in segs)
    if size and count > 1:
        # only the last segment may be longer (a short tail joins it), none is tiny
        assert all(s.frames == size for s in segs[:-1]) and segs[-1].frames >= size // 4


def test_segment_planning_rejects_empty_videos():
    with pytest.raises(InvalidInputError):
        plan_segments(0, 300)


def test_overlap_must_cover_the_tracker_lookahead():
    check_segmenting(Config())  # defaults agree: overlap 48 = lookahead 48
    bad = Config().replace("ray.segment_overlap=10")
    with pytest.raises(ConfigError, match="segment_overlap .10. must be >= track.lookahead .48."):
        check_segmenting(bad)
    check_segmenting(bad.replace("ray.segment_frames=0"))  # whole videos need no context


def test_method_config_hash_tracks_what_shapes_each_output():
    cfg = Config()
    h = {m: method_config_hash(cfg, m) for m in ("blur", "mask", "pixelate", "swap")}
    assert len(set(h.values())) == 4
    assert method_config_hash(Config(), "blur") == h["blur"], "stable across processes"
    # resources and evaluation never redo outputs
    other = cfg.replace("ray.concurrency=7", "ray.segment_frames=100", "evaluate.max_frames=5")
    assert all(method_config_hash(other, m) == h[m] for m in h)
    # a blur setting redoes blur only; detection redoes everything
    b = cfg.replace("anonymize.blur.strength=0.5")
    assert method_config_hash(b, "blur") != h["blur"] and method_config_hash(b, "mask") == h["mask"]
    d = cfg.replace("detect.min_score=0.7")
    assert all(method_config_hash(d, m) != h[m] for m in h)
    # the swap depends on the donor
    assert method_config_hash(cfg, "swap", "donor-a") != method_config_hash(cfg, "swap", "donor-b")


def _row(video, method, state="done", sha="s1", chash="h1", **kw):
    return {"video": video, "method": method, "state": state, "input_sha256": sha, "config_hash": chash, **kw}


def test_status_table_round_trip_and_done_rule(tmp_path):
    out = tmp_path / "v.blur.mp4"
    out.write_bytes(b"x")
    t = StatusTable([_row("v", "blur", timings={"render": 1.5}), _row("v", "mask", state="failed", error="boom"), _row("w", "", state="failed")])
    path = t.write(tmp_path / "status.parquet")
    back = StatusTable.load(path)
    assert len(back) == 3 and back.get("v", "mask")["error"] == "boom"
    assert back.is_done("v", "blur", "s1", "h1", out)
    assert not back.is_done("v", "blur", "s2", "h1", out), "another input"
    assert not back.is_done("v", "blur", "s1", "h2", out), "another configuration"
    assert not back.is_done("v", "mask", "s1", "h1", out), "failed is not done"
    assert not back.is_done("v", "blur", "s1", "h1", tmp_path / "gone.mp4"), "output deleted since"
    assert back.videos() == {"v": "failed", "w": "failed"}
    back.replace_video("v", [_row("v", "mask")], keep_methods=["blur"])
    back.replace_video("w", [_row("w", "blur")])
    assert sorted(back.rows) == [("v", "blur"), ("v", "mask"), ("w", "blur")]
    assert back.videos() == {"v": "done", "w": "done"}
    assert StatusTable.load(tmp_path / "none.parquet").rows == {}


def test_merge_stats_adds_counts_and_keeps_minimums():
    a = {"frames": 10, "faces_swapped": 8, "gate_min_distance": 0.7, "gate_every": 5, "donor": "x", "train_steps": 300,
         "gate_max_interval": 40, "swap_failed_reasons": {"small": 1}}
    b = {"frames": 5, "faces_swapped": 5, "gate_min_distance": 0.65, "gate_every": 5, "donor": "x", "train_steps": 300,
         "gate_max_interval": 40, "swap_failed_reasons": {"small": 2, "blur": 1}}
    m = merge_stats([a, b, {}])
    assert m["frames"] == 15 and m["faces_swapped"] == 13 and m["gate_min_distance"] == 0.65
    assert m["gate_every"] == 5 and m["gate_max_interval"] == 40 and m["train_steps"] == 300 and m["donor"] == "x"
    assert m["swap_failed_reasons"] == {"small": 3, "blur": 1}


def test_progress_line_and_rate_limit():
    p = ArchiveProgress(total=4, t0=100.0)
    p.video("done")
    p.video("partial")
    p.video("failed")
    p.add_frames(300)
    line = p.line(now=110.0)
    assert "3/4 videos (2 done, 1 failed, 0 skipped)" in line and "30.0 frames/s" in line
    assert p.due(5, now=200.0) and not p.due(5, now=203.0) and p.due(5, now=205.5)
    assert not p.due(0, now=1e9)


def _plan(frames, methods=("blur",), segment_frames=0, context=0):
    from types import SimpleNamespace

    return SimpleNamespace(segments=plan_segments(frames, segment_frames, overlap=context), todo=tuple(methods))


def test_render_order_puts_the_most_work_first():
    from deid.archive import render_cost, render_order

    plans = {"a_short": _plan(200), "b_long": _plan(900), "c_mid": _plan(400), "d_two_methods": _plan(300, ("blur", "mask"))}
    assert render_cost(plans["d_two_methods"]) == 600  # frames x methods
    assert render_order(plans) == ["b_long", "d_two_methods", "c_mid", "a_short"]
    # ties keep a fixed order (by id), whatever the mapping's order
    assert render_order({"y": _plan(100), "x": _plan(100)}) == ["x", "y"]
    # the context analysed around each segment counts: two segments of 300 + 2 x 48
    assert render_cost(_plan(600, segment_frames=300, context=48)) == 600 + 4 * 48


def test_longest_first_shortens_whole_video_runs_on_a_pool():
    """What the order is for: three whole videos on two workers that each take the next
    video when free (one in flight, as the render pool does). The pancake-like long clip
    first finishes at the longer of (long, short + short); last, it waits for a short one."""
    from deid.archive import render_cost, render_order

    plans = {"a_talking_1": _plan(2000), "b_talking_2": _plan(2000), "z_pancake": _plan(3400)}

    def makespan(order):
        free = [0.0, 0.0]
        for v in order:
            k = free.index(min(free))
            free[k] += render_cost(plans[v])
        return max(free)

    assert makespan(render_order(plans)) == 4000
    assert makespan(sorted(plans)) == 5400  # alphabetical: the long one last


def test_evaluation_order_puts_the_most_work_first():
    """Pose on the original and every output, identity on both: frames x (1 + outputs)."""
    from deid.archive import evaluation_order

    jobs = {"a_short_3_methods": (300, 3), "b_long_1_method": (700, 1), "c_mid_2_methods": (450, 2), "d_nothing": (0, 2)}
    # 1200, 1400, 1350, 0
    assert evaluation_order(jobs) == ["b_long_1_method", "c_mid_2_methods", "a_short_3_methods", "d_nothing"]
    assert evaluation_order({"y": (100, 1), "x": (100, 1)}) == ["x", "y"]
    assert evaluation_order({}) == []
