"""A synthetic METRICS_DIR for the report's tests and docs: real pipeline outputs and
real metric functions, no model files, no real people.

:func:`make_metrics_dir` runs :func:`deid.pipeline.process_video` with the fake (but
real-algorithm) backends of :mod:`deid.testing` on synthetic clips, so the processed
videos, audit records and frames tables are exactly what the pipeline writes. The
keypoints are *drawn* rather than estimated: a wholebody133 person anchored on the
synthetic face, with a tapping hand, a moving mouth and blinking eyes (so clinical
features can be measured); each method perturbs them the way it would hurt a pose
model (mask loses face points, blur and pixelate jitter them). AP, OKS, identity rows,
clinical errors and status rows are then computed by the project's own metric
functions and written through :mod:`deid.metrics.schemas`.

Extra knobs build the cases the report must survive: a ``leaky`` output (faces left in
clear) for the fail-closed checks, runs without swap or without a reference photo, and
missing tables.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pyarrow as pa

from ..metrics import schemas

K = 133
PERFRAME_GROUPS = ("overall", "body", "head", "face", "hands", "feet")


# ----------------------------------------------------------------------------- synthetic poses


def synthetic_person(i: int, n: int, width: int, height: int, fps: float) -> np.ndarray:
    """(1, 133, 3) keypoints of the synthetic clip's person in frame ``i`` (anchored on
    :func:`deid.testing.face_center`): COCO body, feet, 68 face points on an ellipse with
    a mouth that opens and eyes that blink, and two hands whose thumb and index tap at ~3 Hz."""
    from ..testing import face_center

    cx, cy = face_center(i, n, width, height)
    fw = 0.22 * min(width, height)
    fh = fw * 1.25
    t = i / fps
    kp = np.zeros((K, 3), np.float32)
    sw = fw * 1.8
    top = cy + fh * 0.6
    body = {
        0: (cx, cy), 1: (cx + fw * 0.2, cy - fh * 0.1), 2: (cx - fw * 0.2, cy - fh * 0.1),
        3: (cx + fw * 0.45, cy), 4: (cx - fw * 0.45, cy),
        5: (cx + sw / 2, top), 6: (cx - sw / 2, top), 7: (cx + sw / 2 + fw * 0.5, top + fh * 0.5),
        8: (cx - sw / 2 - fw * 0.5, top + fh * 0.5), 9: (cx + sw / 2 + fw * 0.9, top + fh * 0.9),
        10: (cx - sw / 2 - fw * 0.9, top + fh * 0.9), 11: (cx + sw * 0.3, top + fh * 2.0),
        12: (cx - sw * 0.3, top + fh * 2.0), 13: (cx + sw * 0.3, top + fh * 2.8), 14: (cx - sw * 0.3, top + fh * 2.8),
        15: (cx + sw * 0.3 + fw * 0.3 * math.sin(2 * math.pi * 0.9 * t), top + fh * 3.6),
        16: (cx - sw * 0.3 - fw * 0.3 * math.sin(2 * math.pi * 0.9 * t), top + fh * 3.6),
    }
    for k, (x, y) in body.items():
        kp[k] = (x, y, 0.9)
    for j, k in enumerate(range(17, 23)):
        ank = kp[15] if j < 3 else kp[16]
        kp[k] = (ank[0] + (j % 3 - 1) * fw * 0.1, ank[1] + fw * 0.1, 0.8)
    # face: jaw + brows + nose on an ellipse; eyes and mouth with motion
    ang = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    kp[23:91, 0] = cx + 0.4 * fw * np.cos(ang)
    kp[23:91, 1] = cy + 0.4 * fh * np.sin(ang)
    kp[23:91, 2] = 0.85
    blink = 0.2 if (i % 40) in (10, 11) else 1.0
    for e, ex in ((36, cx - fw * 0.2), (42, cx + fw * 0.2)):  # p1..p6 per eye
        w, h = fw * 0.12, fh * 0.05 * blink
        pts = [(ex - w, cy - fh * 0.1), (ex - w / 3, cy - fh * 0.1 - h), (ex + w / 3, cy - fh * 0.1 - h),
               (ex + w, cy - fh * 0.1), (ex + w / 3, cy - fh * 0.1 + h), (ex - w / 3, cy - fh * 0.1 + h)]
        for j, (x, y) in enumerate(pts):
            kp[23 + e + j, :2] = (x, y)
    mouth = fh * 0.04 * (1.2 + math.sin(2 * math.pi * 1.5 * t))
    kp[23 + 62, :2] = (cx, cy + fh * 0.22 - mouth / 2)
    kp[23 + 66, :2] = (cx, cy + fh * 0.22 + mouth / 2)
    kp[23 + 27, :2] = (cx, cy - fh * 0.05)
    kp[23 + 8, :2] = (cx, cy + fh * 0.45)
    # hands at the wrists; thumb tip and index tip tap
    for base, wrist, side in ((91, 9, 1), (112, 10, -1)):
        wx, wy = kp[wrist, :2]
        tap = 0.5 + 0.5 * math.sin(2 * math.pi * 3.0 * t + (0 if side > 0 else 1.0))
        for f in range(5):
            for j in range(4):
                ang_f = -0.9 + 0.45 * f
                r = fw * (0.12 + 0.07 * j)
                kp[base + 1 + 4 * f + j] = (wx + side * r * math.cos(ang_f), wy + r * math.sin(ang_f) + fw * 0.1, 0.8)
        kp[base] = (wx, wy, 0.8)
        kp[base + 4, :2] = (wx + side * fw * 0.3, wy + fw * 0.05)
        kp[base + 8, :2] = (wx + side * fw * 0.3, wy + fw * 0.05 + fw * 0.25 * tap)
    return kp[None]


def perturb(kps: Sequence[np.ndarray], method: str, seed: int = 0) -> list[np.ndarray]:
    """What a pose model would find on the processed frames: ``mask`` loses most face
    points and jitters the head; ``blur`` / ``pixelate`` jitter the face; ``swap`` keeps
    the face nearly intact; ``leaky`` (no anonymization) keeps everything."""
    rng = np.random.default_rng(abs(hash(method)) % (2**32) + seed)
    sigma = {"swap": 0.6, "blur": 1.5, "pixelate": 2.5, "mask": 3.0, "leaky": 0.0, "original": 0.0}.get(method, 2.0)
    out = []
    for a in kps:
        a = a.copy()
        if a.size == 0 or sigma == 0:
            out.append(a)
            continue
        a[:, :, :2] += rng.normal(0, 0.5, a[:, :, :2].shape)
        a[:, 23:91, :2] += rng.normal(0, sigma, a[:, 23:91, :2].shape)
        a[:, 0:5, :2] += rng.normal(0, sigma * 0.7, a[:, 0:5, :2].shape)
        if method == "mask":
            lost = rng.random(68) < 0.8
            a[:, 23:91][:, lost] = 0.0
        out.append(a.astype(np.float32))
    return out


# ----------------------------------------------------------------------------- writers


def write_rows(rows: list[dict[str, Any]], path: Path, kind: str, dataset: bool = False) -> Path:
    """Write rows through schemas.py, keeping only the columns the schema has."""
    names = set(schemas.schema(kind).names)
    rows = [{k: v for k, v in r.items() if k in names} for r in rows]
    return schemas.write_dataset(rows, path, kind) if dataset else schemas.write_table(rows, path, kind)


# ----------------------------------------------------------------------------- the directory


def make_metrics_dir(
    root: str | Path,
    *,
    videos: Sequence[str] = ("patient_a",),
    methods: Sequence[str] = ("blur", "mask", "pixelate"),
    swap: bool = False,
    leaky: bool = False,
    reference: bool = True,
    n_frames: int = 48,
    size: tuple[int, int] = (160, 120),
    fps: float = 25.0,
    drop: Sequence[str] = (),
) -> Path:
    """Build ``root/metrics`` (the METRICS_DIR) from synthetic clips in ``root/videos``
    processed into ``root/anon``. ``swap`` adds a fake swap (a differently coloured
    "donor" face); ``leaky`` adds a method that leaves faces in clear (and a frames table
    with no regions) to exercise the report's face check; ``reference=False`` leaves
    out the patient's reference embeddings; ``drop`` lists tables not to write
    (e.g. ``("perframe", "keypoints")``). Returns the METRICS_DIR."""
    from ..config import Config
    from ..metrics.clinical import clinical_features, feature_errors, primary_person
    from ..metrics.identity import identity_rows, summarize_identity
    from ..metrics.oks import evaluate_pose
    from ..metrics.reid import reid_attack
    from ..pipeline import frames_path, process_video
    from ..testing import NoopAnonymizer, PatchIdentityEncoder, fake_components, make_synthetic_video
    from ..io import read_frames

    root = Path(root)
    vdir, adir, mdir = root / "videos", root / "anon", root / "metrics"
    vdir.mkdir(parents=True, exist_ok=True)
    mdir.mkdir(parents=True, exist_ok=True)
    cfg = Config().replace("audit.sample_frames=6", "io.chunk_size=8", "track.lookahead=24", "audit.on_leak=flag")
    all_methods = list(methods) + (["swap"] if swap else []) + (["leaky"] if leaky else [])
    enc = PatchIdentityEncoder()
    w, h = size

    per = {k: [] for k in ("summary", "status", "keypoints", "identity", "perframe", "per_keypoint", "clinical")}
    run_videos = []
    gallery, gallery_lab, probes = [], [], {}
    for vi, v in enumerate(videos):
        clip = make_synthetic_video(vdir / f"{v}.mp4", n_frames=n_frames, width=w, height=h, fps=fps)
        comp = fake_components(cfg, [m for m in all_methods if m in ("blur", "mask", "pixelate")])
        if swap:
            comp.anonymizers["swap"] = _FakeSwap()
        if leaky:
            comp.anonymizers["leaky"] = NoopAnonymizer()
        res = process_video(clip.path, adir, all_methods, cfg, components=comp, overwrite=True)
        if res.status != "done":
            raise RuntimeError(f"synthetic pipeline run failed: {res.error}")
        outs = {mo.method: mo for mo in res.outputs}
        if leaky:  # the leaky output's frames table claims no region anywhere
            from ..audit import write_frames_table

            write_frames_table(frames_path(outs["leaky"].path), [(i, "ok", True, [], []) for i in range(n_frames)], "leaky")
        per["status"] += schemas.status_rows(res, video=v, deid_version="test")
        orig_frames = read_frames(clip.path)
        gt = [synthetic_person(i, n_frames, w, h, fps) for i in range(n_frames)]
        boxes = [np.zeros((0, 4), np.float32) if b is None else b[None] for b in clip.boxes]
        orig_emb = enc.embed(orig_frames, boxes)
        refs = np.concatenate([e for e in orig_emb[:: max(1, n_frames // 6)] if len(e)]) if reference else None
        for e in orig_emb[:: max(1, n_frames // 6)]:
            gallery.append(e)
            gallery_lab += [v] * len(e)
        orig_track = primary_person(gt)
        orig_feat = clinical_features(orig_track, fps)
        for m in ["original", *all_methods]:
            kps = gt if m == "original" else perturb(gt, m, seed=vi)
            per["keypoints"].append(schemas.keypoints_table(v, m, kps, pose_backend="synthetic"))
            ev = evaluate_pose(gt, kps)
            frames_m = orig_frames if m == "original" else read_frames(outs[m].path)
            emb = enc.embed(frames_m, boxes)
            id_rows = identity_rows(boxes, emb, boxes, orig_emb, refs, _donor_refs() if m == "swap" else None,
                                    threshold=enc.threshold, video=v, method=m)
            per["identity"] += id_rows
            probes.setdefault(m, []).append((v, [e for e in emb if len(e)]))
            feats = clinical_features(primary_person(kps), fps)
            fe = feature_errors(orig_feat, feats)
            for name in feats:
                per["clinical"].append({"video": v, "method": m, "feature": name, "value": feats[name],
                                        "original_value": orig_feat[name], "relative_error": fe[name]})
            for f in range(n_frames):
                row = {"video": v, "method": m, "frame": f, "persons": int(len(kps[f]))}
                for g in PERFRAME_GROUPS:
                    row[f"oks_{g}"] = float(ev.frame_oks[g][f])
                d = [r["dist_patient"] for r in id_rows if r["frame"] == f and r["found"]]
                row["min_dist_patient"] = float(np.nanmin(d)) if d and np.isfinite(d).any() else float("nan")
                per["perframe"].append(row)
            from ..pose.schema import SCHEMA

            for info in SCHEMA:
                per["per_keypoint"].append({"video": v, "method": m, "keypoint": info.index, "name": info.name,
                                            "region": info.region, "mean_error": float(ev.keypoint_error[info.index]),
                                            "missing_rate": float(ev.keypoint_missing[info.index])})
            row = schemas.summary_row(v, m, pose=ev, identity=summarize_identity(id_rows), feature_errors=fe,
                                      pose_backend="synthetic", identity_backend=enc.name, identity_threshold=enc.threshold,
                                      frames=n_frames, deid_version="test")
            row["identity_frames"] = n_frames
            row["patient_source"] = "photos" if reference else "none"
            row["patient_refs"] = 0 if refs is None else len(refs)
            row["frames_match_same_place"] = row.get("frames_match_original")
            if not reference:
                for k in ("min_dist_patient", "mean_dist_patient"):
                    row[k] = float("nan")
            per["summary"].append(row)
        run_videos.append({
            "video": v, "original": str(clip.path), "fps": fps, "width": w, "height": h, "frame_count": n_frames,
            "processed": {m: str(outs[m].path) for m in all_methods},
            "audit": {m: outs[m].audit_path or None for m in all_methods},
        })
    # re-identification attack across the videos' identities (needs >= 2 for a meaningful chance level)
    if gallery:
        g = np.concatenate(gallery)
        for row in per["summary"]:
            ps = dict(probes.get(row["method"], [])).get(row["video"])
            if ps:
                row.update(reid_attack(g, gallery_lab, np.concatenate(ps), row["video"]).to_dict())
    _write(mdir, per, drop)
    run = {
        "schema_version": schemas.SCHEMA_VERSION,
        "deid_version": "test",
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "config": cfg.to_dict(),
        "pose_backend": {"name": "synthetic", "model": "drawn keypoints", "version": "1"},
        "identity_backend": {"name": enc.name, "threshold": enc.threshold, "model": "8x8 patch"},
        "videos": run_videos,
    }
    if "run" not in drop:
        (mdir / "run.json").write_text(json.dumps(run, indent=1, default=str))
    return mdir


def _write(mdir: Path, per: dict[str, list], drop: Sequence[str]) -> None:
    if "summary" not in drop:
        write_rows(per["summary"], mdir / "summary.parquet", "summary")
    if "status" not in drop:
        schemas.write_table(per["status"], mdir / "status.parquet", "status")
    if "keypoints" not in drop:
        schemas.write_dataset(pa.concat_tables(per["keypoints"]), mdir / "keypoints", "keypoints")
    if "identity" not in drop:
        schemas.write_dataset(per["identity"], mdir / "identity", "identity")
    if "perframe" not in drop:
        write_rows(per["perframe"], mdir / "perframe", "perframe", dataset=True)
    if "per_keypoint" not in drop:
        write_rows(per["per_keypoint"], mdir / "per_keypoint.parquet", "per_keypoint")
    if "clinical" not in drop:
        write_rows(per["clinical"], mdir / "clinical.parquet", "clinical")


def _donor_refs() -> np.ndarray:
    """PatchIdentityEncoder embedding of the fake swap's donor face (what the swap shows)."""
    from ..testing import PatchIdentityEncoder

    img = np.zeros((40, 40, 3), np.uint8)
    img[:] = _FakeSwap.DONOR
    return PatchIdentityEncoder().embed([img], [np.array([[0, 0, 40, 40]], np.float32)])[0]


class _FakeSwap:
    """Paints a flat "donor" face (a colour the colour detector ignores) in each region:
    an anonymizer with swap's outward behaviour and none of its machinery."""

    name = "swap"
    DONOR = (205, 160, 130)

    def apply(self, frame: np.ndarray, faces) -> np.ndarray:
        import cv2

        out = frame.copy()
        for f in faces:
            x1, y1, x2, y2 = (int(round(v)) for v in f.box)
            cx, cy = (x1 + x2) // 2, (y1 + y2) // 2
            cv2.ellipse(out, (cx, cy), (max(1, (x2 - x1) // 2), max(1, (y2 - y1) // 2)), 0, 0, 360, self.DONOR, -1)
        return out
