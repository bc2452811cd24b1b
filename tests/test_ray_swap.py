"""Per-patient swap training on Ray Train (one TorchTrainer per patient, in background
tasks), conversion in the render actors as each model is ready, videos without a swap
published while the models train, and the patient's model deleted after its videos are
published. Tiny model, synthetic clips and donor (slow: trains)."""

import csv
import json

import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.ray, pytest.mark.slow]

CONSENT = "kind: person\nwho: Test Donor\ngiven: 2024-01-01\nscope: [face-swap-donor]\nexpires: {exp}\n"


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    # Ray Train V2 watches its controller through the State API, which the dashboard serves
    ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1", _node_ip_address="127.0.0.1",
             logging_level="WARNING")
    yield ray
    ray.shutdown()


def test_swap_models_trained_per_patient_and_deleted(ray_cluster, tmp_path, capsys):
    from deid.swap.donors import Consent, DonorLibrary
    from deid.swap.testing import write_synthetic_donor
    from deid.testing import make_synthetic_video
    from ray_jobs.deidentify import main

    arch = tmp_path / "archive"
    arch.mkdir()
    make_synthetic_video(arch / "p1_a.mp4", n_frames=40, width=320, height=240)
    make_synthetic_video(arch / "p1_b.mp4", n_frames=30, width=320, height=240)
    make_synthetic_video(arch / "p2.mp4", n_frames=30, width=320, height=240)
    make_synthetic_video(arch / "other.mp4", n_frames=20, width=320, height=240)
    lib = DonorLibrary(tmp_path / "donors")
    lib.add("donor-ok", [write_synthetic_donor(tmp_path / "donor_frames", n=16, width=320, height=240)],
            Consent.parse(CONSENT.format(exp="2099-01-01")))
    expired = tmp_path / "donors" / "donor-expired"
    (expired / "media").mkdir(parents=True)
    (expired / "consent.yaml").write_text(CONSENT.format(exp="2020-01-01"))
    with open(arch / "manifest.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["video", "patient_id", "donor", "methods"])
        w.writerows([["p1_a.mp4", "P1", "donor-ok", "swap,blur"], ["p1_b.mp4", "P1", "donor-ok", "swap"],
                     ["p2.mp4", "P2", "donor-expired", "swap,mask"], ["other.mp4", "P3", "", "blur"]])
    storage = tmp_path / "storage"
    sets = [
        "detect.backend=color", "track.pose_fallback=false", "audit.identity_backend=patch", "audit.sample_frames=6",
        "audit.on_leak=flag", "io.chunk_size=8", "track.lookahead=24", "ray.segment_overlap=24", "ray.segment_frames=20",
        "swap.preset=tiny", "swap.max_steps=3", "swap.max_minutes=0", "swap.landmarks=synthetic", "swap.donor_pretrain=false",
        f"swap.donor_library={tmp_path / 'donors'}", f"ray.storage_path={storage}", "ray.progress_every_s=0",
    ]
    argv = ["--manifest", str(arch / "manifest.csv"), "--out", str(tmp_path / "out"), "--no-report", "--no-evaluate"]
    for s in sets:
        argv += ["--set", s]
    assert main(argv) == 1  # P2's swap cannot be trained: its donor's consent expired
    err = capsys.readouterr().err
    assert "swap model of patient P1 trained on Ray Train (3 steps)" in err
    out = tmp_path / "out"
    st = pq.read_table(out / "status.parquet").to_pandas()
    rows = {(v, m): (s, e) for v, m, s, e in zip(st.video, st.method, st.state, st.error)}
    assert rows[("p1_a", "swap")][0] == "done" and rows[("p1_a", "blur")][0] == "done" and rows[("p1_b", "swap")][0] == "done"
    assert rows[("p2", "mask")][0] == "done", "the other methods of a video still run"
    assert rows[("p2", "swap")][0] == "failed" and "consent" in rows[("p2", "swap")][1].lower()
    # a video without a swap does not wait for the swap models: it is published while they train
    when = {(v, m): t for v, m, t in zip(st.video, st.method, st.created_unix)}
    assert rows[("other", "blur")][0] == "done"
    assert when[("other", "blur")] < when[("p1_a", "swap")], when
    rec = json.loads((out / "p1_b.swap.audit.json").read_text())
    stats = rec["anonymizer_stats"]
    assert stats["donor"] == "donor-ok" and stats["train_steps"] == 3 and rec["frames_read"] == 30
    assert stats["patient_model"].startswith("deleted")  # as the in-process session records it
    # the patients' models (and Ray's checkpoint copies) are gone once their videos are published
    leftovers = [p for p in storage.rglob("*")] if storage.exists() else []
    assert not any(p.name == "model.pt" for p in leftovers), leftovers
    assert not (tmp_path / ".out.deid-work").exists()
