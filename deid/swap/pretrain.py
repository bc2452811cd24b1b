"""Donor pre-training: train once per donor, start every patient's training from it.

Per-patient training on a CPU is budgeted in minutes, and half of what it learns —
the donor's decoder and an encoder that knows faces — does not depend on the patient.
So the donor's side is trained once, on the donor's faces alone (both decoders learn
the donor, which also gives the patient decoder a face-shaped start), and cached in
the donor's folder (``cache/pretrain_<arch>.pt``). A patient's training then starts
from those weights (``swap.donor_pretrain``, on by default) and still trains encoder
and both decoders jointly on patient *and* donor faces, as in the paper.

What is cached is derived only from consented donor material: no patient has been
through this model, so caching it is no privacy risk (a patient's trained model never
is cached). Build it with ``deid donor add NAME ... --pretrain-minutes M`` or
``deid donor pretrain NAME``, or on a donor's first use with
``swap.donor_pretrain_minutes`` > 0.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

from .spec import ModelSpec

log = logging.getLogger(__name__)


def pretrained_path(donor: Any, spec: ModelSpec) -> Path:
    from .align import ALIGN_VERSION

    return Path(donor.cache) / f"pretrain_{spec.size}px_{spec.arch_key()}_{ALIGN_VERSION}.pt"


def pretrain_donor(
    donor: Any,
    cfg: Any,
    *,
    minutes: float,
    steps: int = 0,
    detector: Any = None,
    landmarker: Any = None,
    device: Any = None,
    progress: bool = False,
    report: Callable[[dict[str, Any]], None] | None = None,
) -> Path:
    """Train the donor-only model for ``minutes`` and/or ``steps`` more (resuming a
    previous pre-training of the same architecture if there is one) and store it in the
    donor's cache."""
    from ..detect import build_detector
    from .align import build_landmarker
    from .donors import donor_faceset
    from .train import CHECKPOINT, TrainData, fit, load_checkpoint, resolve_spec

    sc = cfg.swap
    spec = resolve_spec(sc)
    faces = donor_faceset(donor, spec.size, detector=detector or build_detector(cfg), landmarker=landmarker or build_landmarker(sc.landmarks))
    from .train import MIN_FACES

    if len(faces) < MIN_FACES:  # said of the donor (the pre-training reads the donor's faces on both sides)
        from ..errors import InvalidInputError

        raise InvalidInputError(f"donor {donor.name}: {len(faces)} usable face(s) in its material, at least {MIN_FACES} are "
                                "needed; add more donor material (videos or photos with a larger, frontal face)")
    dst = pretrained_path(donor, spec)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="deid-pretrain-") as tmp:
        resume = None
        prior_steps, prior_s = 0, 0.0
        if dst.is_file():
            shutil.copy2(dst, Path(tmp) / CHECKPOINT)
            blob = load_checkpoint(dst)
            prior_steps, prior_s = int(blob["step"]), float(blob["elapsed_s"])
            resume = Path(tmp) / CHECKPOINT
        run_cfg = dataclasses.replace(
            sc, max_minutes=prior_s / 60.0 + float(minutes) if minutes else 0.0, max_steps=prior_steps + int(steps) if steps else 0
        )
        try:
            res = fit(TrainData(faces, faces), run_cfg, tmp, resume_from=resume, device=device, spec=spec, progress=progress, report=report,
                      save_on_interrupt=True)
        except KeyboardInterrupt:  # Ctrl-C / SIGTERM: keep the steps done so far, then stop as asked
            ck = Path(tmp) / CHECKPOINT
            if ck.is_file() and int(load_checkpoint(ck)["step"]) > prior_steps:
                kept = _store(ck, dst, donor.name)
                log.warning("donor %s: pre-training stopped; kept %d -> %d steps in %s", donor.name, prior_steps, kept, dst)
            raise
        _store(Path(res.checkpoint), dst, donor.name)
    log.info("donor %s: pre-trained %d -> %d steps (%.0f s total) into %s", donor.name, prior_steps, res.steps, res.elapsed_s, dst)
    return dst


def _store(checkpoint: Path, dst: Path, donor_name: str) -> int:
    """Keep a training checkpoint's weights (and step count) as the donor's pre-training,
    written atomically; the optimizer is dropped (it is restarted per patient). Returns
    the step count stored."""
    from .train import load_model, save_checkpoint

    model, meta = load_model(checkpoint, "cpu")
    slim = checkpoint.with_name("slim.pt")
    save_checkpoint(slim, model, None, meta["step"], meta["elapsed_s"], meta.get("losses", {}), {"donor": donor_name})
    part = dst.with_name(dst.name + ".part")
    shutil.copy2(slim, part)
    os.replace(part, dst)
    return int(meta["step"])
