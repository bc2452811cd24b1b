"""Versioned Parquet tables: validation, round trips, partitioned datasets, and that
pandas and DuckDB read them as they are."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deid.errors import InvalidInputError
from deid.metrics import schemas as S
from deid.metrics.clinical import FEATURE_NAMES
from deid.metrics.identity import identity_rows


def kp_frames(seed=0):
    rng = np.random.default_rng(seed)
    f = [rng.uniform(0, 500, (2, 133, 3)).astype(np.float32), np.zeros((0, 133, 3), np.float32), rng.uniform(0, 1, (1, 133, 3)).astype(np.float32)]
    f[0][0, 5, 2] = 0.0  # a missing point stays a row with score 0
    return f


def identity_data():
    box = np.array([[10, 10, 60, 70]], np.float32)
    return identity_rows([box, np.zeros((0, 4))], [np.ones((1, 4)), np.zeros((0, 4))], [box, box], [np.ones((1, 4)), np.ones((1, 4))],
                         patient_refs=np.ones((1, 4)), video="v1", method="blur")


def summary_row(video="v1", method="blur"):
    row = {"video": video, "method": method, "pose_backend": "mediapipe_holistic", "identity_backend": "dlib",
           "identity_threshold": 0.6, "frames": 300, "ap_overall": 0.8, "ap_hands": float("nan"),
           "frames_leak": 0, "attack_rank1": 0.1, "attack_chance_rank1": 0.1, "deid_version": "0.1"}
    row.update({f"fe_{n}": 0.05 for n in FEATURE_NAMES})
    return row


def status_row():
    result = SimpleNamespace(
        input="/data/p01.mp4", status="done", error="", error_kind="", frames_read=300,
        counts={"regions_detected": 290, "regions_interpolated": 8, "regions_held": 2, "regions_pose": 1, "frames_fail_closed": 0},
        timings={"decode": 1.5, "detect": 4.0},
        outputs=[SimpleNamespace(method="blur", frames_written=300, leak={"leaks": 0}),
                 SimpleNamespace(method="mask", frames_written=300, leak={})],
    )
    return S.status_rows(result, input_sha256="ab" * 32, config_hash="cafe", deid_version="0.1", created_unix=1700000000)


DATA = {
    "keypoints": lambda: S.keypoints_table("v1", "original", kp_frames(), pose_backend="mediapipe_holistic"),
    "identity": identity_data,
    "summary": lambda: [summary_row()],
    "status": status_row,
}


@pytest.mark.parametrize("kind", list(S.TABLES))
def test_file_round_trip_pandas_and_duckdb(kind, tmp_path):
    duckdb = pytest.importorskip("duckdb")
    path = tmp_path / f"{kind}.parquet"
    S.write_table(DATA[kind](), path, kind)
    meta = pq.read_schema(path).metadata
    assert meta[b"deid.table"] == kind.encode() and meta[b"deid.schema_version"] == S.SCHEMA_VERSION.encode()
    t = S.read_table(path, kind)
    assert t.schema.equals(S.schema(kind), check_metadata=False) and t.num_rows > 0
    df = pd.read_parquet(path)
    assert list(df.columns) == S.schema(kind).names and len(df) == t.num_rows
    ddf = duckdb.sql(f"select * from read_parquet('{path}')").df()
    assert list(ddf.columns) == S.schema(kind).names and len(ddf) == t.num_rows
    assert not list(tmp_path.glob(".*partial*"))  # atomic publication left nothing behind


def test_keypoints_round_trip_exact(tmp_path):
    frames = kp_frames(1)
    S.write_table(S.keypoints_table("v", "swap", frames, frame_ids=[0, 1, 2]), tmp_path / "k.parquet", "keypoints")
    back = S.keypoints_from_table(S.read_table(tmp_path / "k.parquet", "keypoints"), num_keypoints=133)
    assert [b.shape for b in back] == [f.shape for f in frames]
    for a, b in zip(frames, back):
        np.testing.assert_array_equal(a, b)


def test_identity_and_summary_values_survive(tmp_path):
    rows = identity_data()
    S.write_table(rows, tmp_path / "i.parquet", "identity")
    df = S.read_table(tmp_path / "i.parquet", "identity").to_pandas()
    assert df["face"].tolist() == [0, -1] and df["found"].tolist() == [True, False]
    assert df["leak"].tolist() == [True, False] and df["dist_original"].iloc[0] == pytest.approx(0.0)
    S.write_table([summary_row()], tmp_path / "s.parquet", "summary")
    s = pd.read_parquet(tmp_path / "s.parquet").iloc[0]
    assert s["ap_overall"] == pytest.approx(0.8) and math.isnan(s["ap_hands"])  # NaN stored as null
    assert math.isnan(s["ap_face"])  # a column not given is null
    st = S.read_table(tmp_path / "s.parquet", "summary").to_pandas()
    assert st["frames"].iloc[0] == 300


def test_status_rows_from_a_pipeline_result():
    rows = status_row()
    assert [r["method"] for r in rows] == ["blur", "mask"]
    assert rows[0]["faces_detected"] == 290 and rows[0]["faces_pose_placed"] == 1 and rows[0]["leaks"] == 0
    assert rows[0]["seconds_total"] == pytest.approx(5.5) and rows[0]["video"] == "p01"
    failed = S.status_rows(SimpleNamespace(input="x.mp4", status="failed", error="bad", error_kind="decode_error",
                                           frames_read=0, counts={}, timings={}, outputs=[]))
    t = S.to_table(failed, "status")
    assert t.column("state").to_pylist() == ["failed"] and t.column("method").to_pylist() == [""]


def test_dataset_partitions_replace_only_what_is_written(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    root = tmp_path / "summary"
    S.write_dataset([summary_row("001", "blur"), summary_row("001", "mask"), summary_row("p2", "blur")], root, "summary")
    assert (root / "video=001" / "method=blur" / "part-0.parquet").is_file()
    newer = summary_row("001", "blur")
    newer["ap_overall"] = 0.5
    S.write_dataset([newer], root, "summary")  # re-evaluate one (video, method)
    t = S.read_table(root, "summary").to_pandas().sort_values(["video", "method"])
    assert t["video"].tolist() == ["001", "001", "p2"]  # "001" stays a string
    assert t["ap_overall"].tolist() == pytest.approx([0.5, 0.8, 0.8])
    df = pd.read_parquet(root)
    assert len(df) == 3 and "ap_overall" in df
    q = f"select video, method, ap_overall from read_parquet('{root}/**/*.parquet', hive_partitioning = true, hive_types = {{'video': VARCHAR}}) order by all"
    got = duckdb.sql(q).fetchall()
    assert got == [("001", "blur", 0.5), ("001", "mask", 0.8), ("p2", "blur", 0.8)]


def test_validation_errors(tmp_path):
    with pytest.raises(InvalidInputError, match="unknown column"):
        S.to_table([{**summary_row(), "ap_overal": 1.0}], "summary")
    with pytest.raises(InvalidInputError, match="required column 'method'"):
        S.to_table([{"video": "v"}], "summary")
    with pytest.raises(InvalidInputError, match="frames"):
        S.to_table([{**summary_row(), "frames": "many"}], "summary")
    with pytest.raises(InvalidInputError, match="must not contain nulls"):
        S.to_table({"video": ["v", None], "method": ["a", "b"], "state": ["done", "done"]}, "status")
    with pytest.raises(InvalidInputError, match="unknown table"):
        S.schema("nope")


def test_reader_checks_table_kind_and_version(tmp_path):
    S.write_table([summary_row()], tmp_path / "s.parquet", "summary")
    with pytest.raises(InvalidInputError, match="not a deid 'status' table"):
        S.read_table(tmp_path / "s.parquet", "status")
    t = S.to_table([summary_row()], "summary")
    future = t.replace_schema_metadata({b"deid.table": b"summary", b"deid.schema_version": b"2.0"})
    pq.write_table(future, tmp_path / "future.parquet")
    with pytest.raises(InvalidInputError, match="schema version 2.0"):
        S.read_table(tmp_path / "future.parquet", "summary")
    # a newer minor version with an extra column still reads
    minor = t.append_column("new_metric", pa.array([1.0])).replace_schema_metadata(
        {b"deid.table": b"summary", b"deid.schema_version": b"1.7"})
    pq.write_table(minor, tmp_path / "minor.parquet")
    assert S.read_table(tmp_path / "minor.parquet", "summary").num_rows == 1
    pq.write_table(pa.table({"a": [1]}), tmp_path / "plain.parquet")
    with pytest.raises(InvalidInputError, match="not a deid"):
        S.read_table(tmp_path / "plain.parquet", "summary")
    with pytest.raises(InvalidInputError, match="no such"):
        S.read_table(tmp_path / "missing.parquet", "summary")


def test_summary_row_from_metric_results(tmp_path):
    from deid.metrics import clinical, evaluate_pose, reid_attack, summarize_identity

    rng = np.random.default_rng(0)
    poses = [rng.uniform(0, 300, (1, 133, 3)) for _ in range(4)]
    for p in poses:
        p[..., 2] = 0.9
    pose = evaluate_pose(poses, poses)
    ident = summarize_identity(identity_data())
    attack = reid_attack(np.eye(4), ["p", "a", "b", "c"], np.eye(4)[:1], "p")
    feats = clinical.clinical_features(np.zeros((30, 133, 3)), 30.0)
    row = S.summary_row("v1", "blur", pose=pose, identity=ident, attack=attack,
                        feature_errors=clinical.feature_errors(feats, feats), pose_backend="mediapipe_holistic",
                        identity_backend="dlib", identity_threshold=0.6)
    S.write_table([row], tmp_path / "s.parquet", "summary")
    df = S.read_table(tmp_path / "s.parquet", "summary").to_pandas().iloc[0]
    assert df["ap_overall"] == pytest.approx(1.0) and df["ap_hands"] == pytest.approx(1.0)
    assert df["frames"] == 4 and df["frames_leak"] == ident["frames_leak"] == 1
    assert df["attack_rank1"] == 1.0 and df["attack_chance_rank1"] == pytest.approx(0.25)
    assert math.isnan(df["fe_blink_rate_per_min"])  # not measurable on an empty track
