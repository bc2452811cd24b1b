"""The archive's stages as Ray workers run them: thin wrappers over :mod:`deid.archive`.

What travels through the object store is small: manifest entries, pickled
:class:`deid.archive.VideoPlan` s (paths, frame ranges, hashes), segment outcomes as
JSON, status rows. Frames never do — each render actor decodes its own frame range
from the (shared) input file and writes its segment files into the private work folder.

Failures are data: every stage returns an error in its result instead of raising, so one
bad video never stops an archive. A worker that *dies* (killed, out of memory, a crash
in native code) is handled by Ray: the actor is restarted and its call retried, or the
task re-run. A segment that keeps killing its worker is given up after
``ray.max_retries`` restarts (counted in the work folder, so it survives the restarts)
and fails its video instead of looping forever.
"""

from __future__ import annotations

import logging
import os
import pickle
import signal
from typing import Any, Callable

log = logging.getLogger(__name__)

#: test hook, read by the driver: ``"<stage>:<marker file>"`` (stage = render | finalize).
#: The first worker that reaches the stage creates the marker and kills itself with
#: SIGKILL midway (render: with half-written segment files; finalize: with stitched
#: temporaries in the output folder) — a real worker death, once per marker.
FAULT_ENV = "DEID_RAY_KILL_ONCE"


def fault_spec(stage: str) -> str:
    spec = os.environ.get(FAULT_ENV, "")
    st, _, marker = spec.partition(":")
    return marker if st == stage and marker else ""


def _die_once(marker: str) -> None:
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    log.warning("fault injection: killing worker %d (%s)", os.getpid(), marker)
    os.kill(os.getpid(), signal.SIGKILL)


# ----------------------------------------------------------------------------- plan


def plan_task(entry: Any, cfg_dict: dict, out_dir: str, work_root: str, status_rows: list[dict], overwrite: bool) -> dict:
    """Probe, hash and plan one video (:func:`deid.archive.plan_video`)."""
    from deid.archive import StatusTable, plan_video
    from deid.config import from_dict
    from deid.errors import DeidError

    try:
        plan = plan_video(entry, from_dict(cfg_dict), out_dir, work_root, StatusTable(status_rows), overwrite=overwrite)
        return {"plan": pickle.dumps(plan), "error": "", "kind": ""}
    except DeidError as e:
        return {"plan": None, "error": str(e), "kind": e.kind}
    except Exception as e:  # noqa: BLE001 - per-video errors are data
        return {"plan": None, "error": f"{entry.video}: unexpected {type(e).__name__}: {e}", "kind": "internal"}


# ----------------------------------------------------------------------------- render


class SegmentRenderer:
    """Ray Data callable class: ``__init__`` builds the models once per actor (detector,
    pose fallback, anonymizers, the leak audit's encoder); each call renders the batch's
    (video, segment) rows with :func:`deid.archive.render_planned_segment` and returns
    one JSON outcome per row.

    Detect -> track -> anonymize -> encode run inside one call on purpose: splitting them
    into separate Ray Data stages would push every decoded frame through the object
    store (a 300-frame 1080p segment is 1.8 GB of RGB); within a segment they already
    overlap in threads (decode, analysis, encode)."""

    def __init__(self, cfg_dict: dict, methods: list[str], max_attempts: int = 4, fault_marker: str = ""):
        from deid.config import from_dict
        from deid.pipeline import Components

        self.cfg = from_dict(cfg_dict)
        self.comp = Components.build(self.cfg, [m for m in methods if m != "swap"])
        self.max_attempts = int(max_attempts)
        self.fault_marker = fault_marker
        self._swap: tuple[str, Any] | None = None  # (model folder, anonymizer): one patient at a time

    def _components(self, plan: Any) -> Any:
        if "swap" not in plan.todo:
            return self.comp
        if self._swap is None or self._swap[0] != plan.swap_model:
            from deid.anonymize.swap import SwapAnonymizer
            from deid.errors import ModelWeightsError

            if not plan.swap_model:
                raise ModelWeightsError(f"{plan.entry.video}: no swap model was trained for patient {plan.entry.patient}")
            self._swap = None  # drop the previous patient's model before loading the next
            anon = SwapAnonymizer.from_dir(plan.swap_model, self.cfg, identity=self.comp.identity)
            # as the in-process session records it (docs/swap.md): what became of the model
            anon.info["patient_model"] = ("kept (swap.keep_model)" if self.cfg.swap.keep_model
                                          else "deleted after the patient's videos (archive job)")
            self._swap = (plan.swap_model, anon)
        return self.comp.with_anonymizer("swap", self._swap[1])

    def _attempt(self, plan: Any, index: int) -> int:
        """How many times this segment has been started (persisted: survives worker deaths)."""
        from deid.archive import private_mkdir

        p = private_mkdir(plan.work_dir) / f"seg-{index:05d}.attempts"
        try:
            n = int(p.read_text() or 0) + 1
        except (OSError, ValueError):
            n = 1
        p.write_text(str(n))
        return n

    def _fault(self) -> Callable[[int], None] | None:
        if not self.fault_marker:
            return None
        seen = [0]

        def tick(n: int) -> None:
            seen[0] += n
            if seen[0] >= 8:  # midway: segment files are half written
                _die_once(self.fault_marker)

        return tick

    def render(self, plan: Any, index: int) -> Any:
        from deid.archive import SegmentOutcome, finished_segment, render_planned_segment
        from deid.errors import DeidError

        seg = plan.segments[index]
        done = finished_segment(plan, index, self.cfg.io.container)
        if done is not None:  # rendered by a killed run: reused, not an attempt
            return done
        n = self._attempt(plan, index)
        if n > self.max_attempts:
            return SegmentOutcome(
                plan.entry.video_id, index, seg.start, seg.stop, ok=False, error_kind="worker_died",
                error=f"{plan.entry.video}: frames [{seg.start}, {seg.stop}) killed their worker {n - 1} times "
                "(out of memory, or a crash decoding this file?); the video is skipped — check it with `deid probe`",
            )
        try:
            comp = self._components(plan)
        except DeidError as e:
            return SegmentOutcome(plan.entry.video_id, index, seg.start, seg.stop, ok=False, error=str(e), error_kind=e.kind)
        return render_planned_segment(plan, index, self.cfg, comp, progress=self._fault())

    def __call__(self, batch: dict[str, Any]) -> dict[str, list]:
        out: dict[str, list] = {"video_id": [], "segment": [], "outcome": []}
        for vid, k, blob in zip(batch["video_id"], batch["segment"], batch["plan"]):
            plan = pickle.loads(blob)  # written by this job's driver
            o = self.render(plan, int(k))
            out["video_id"].append(str(vid))
            out["segment"].append(int(k))
            out["outcome"].append(o.to_json())
        return out


# ----------------------------------------------------------------------------- finalize

_IDENTITY: dict[str, Any] = {}


def _identity(cfg: Any) -> Any:
    """The leak audit's encoder, built once per worker process (Ray reuses workers)."""
    if not cfg.audit.leak_check:
        return None
    key = cfg.audit.identity_backend
    if key not in _IDENTITY:
        from deid.registry import IDENTITY_ENCODERS

        _IDENTITY[key] = IDENTITY_ENCODERS.create(key)
    return _IDENTITY[key]


def finalize_task(plan_blob: bytes, outcomes_json: list[str], cfg_dict: dict, fault_marker: str = "") -> dict:
    """Stitch, audit and publish one video (:func:`deid.archive.finalize_video`)."""
    from deid.archive import SegmentOutcome, finalize_video
    from deid.config import from_dict

    plan = pickle.loads(plan_blob)
    cfg = from_dict(cfg_dict)
    outcomes = [SegmentOutcome.from_json(s) for s in outcomes_json]
    marker = fault_marker
    on_step = (lambda step: _die_once(marker) if step == "stitched" else None) if marker else None
    try:
        identity = _identity(cfg)
    except Exception as e:  # noqa: BLE001 - a missing model fails this video, not the run
        from deid.archive import failed_rows

        return {"video_id": plan.entry.video_id, "state": "failed", "error": str(e),
                "rows": failed_rows(plan.entry.video_id, plan.entry.video, f"leak audit model: {e}", getattr(e, "kind", "model_weights"))}
    res, rows = finalize_video(plan, outcomes, cfg, identity, on_step=on_step)
    return {"video_id": plan.entry.video_id, "state": res.status, "error": res.error, "rows": rows,
            "frames": res.frames_read, "outputs": {o.method: o.path for o in res.outputs}}

