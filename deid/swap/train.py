"""Training: one loop function, pure torch, that a Ray Train adapter can wrap unchanged.

    result = fit(TrainData(patient_faces, donor_faces), cfg.swap, out_dir)
    # in Ray:  fit(data, cfg, out_dir, report=ray.train.report, device=ray.train.torch.get_device())

The paper's setup (Zhu et al., AIES 2020): per patient X and consenting target Y, the
shared encoder and both decoders are trained jointly on X's and Y's faces, each side
reconstructing its own faces from randomly warped copies (see :mod:`deid.swap.augment`).

- **budget**: ``cfg.max_steps`` and/or ``cfg.max_minutes``, both *totals* across
  resumes (the checkpoint carries the step count and elapsed seconds), so a run cut off
  and resumed stops where an uninterrupted one would have;
- **checkpoints**: ``torch.save`` of state dicts and plain numbers only, written
  atomically every ``checkpoint_every_s`` seconds and at the end; loaded with
  ``torch.load(weights_only=True)`` (no pickled code runs on load);
- **report**: ``report(metrics)`` every ``report_every`` steps with losses, step,
  elapsed seconds, steps/s and, right after a checkpoint, its path under
  ``"checkpoint"`` (a Ray adapter turns that into a ``ray.train.Checkpoint``);
- **mixed precision** on CUDA (autocast fp16 + gradient scaling); fp32 on CPU;
- a running (Polyak) average of the weights is kept beside them and saved as
  ``model_avg``; conversion loads it (:func:`load_model`);
- a tqdm progress bar with the two losses (``progress=True``) and a preview grid
  (``preview.png``: patient | reconstruction | swapped; donor | reconstruction).

Nothing here imports ray.
"""

from __future__ import annotations

import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import ConfigError, InvalidInputError, ModelWeightsError
from .augment import grid_image, make_batch
from .faceset import FaceSet
from .spec import ModelSpec, preset

log = logging.getLogger(__name__)

CHECKPOINT = "model.pt"
PREVIEW = "preview.png"
FORMAT = "deid-swap-1"
MIN_FACES = 8  # fewer faces than this cannot train anything that generalises
AVG_DECAY = 0.995  # weight averaging: ~200 steps


@dataclass(frozen=True, eq=False)
class TrainData:
    """The two face sets training reads. Picklable (plain arrays) for Ray workers;
    :meth:`save` / :meth:`load` move it through a directory instead."""

    patient: FaceSet
    donor: FaceSet

    def __post_init__(self) -> None:
        for side, fs in (("patient", self.patient), ("donor", self.donor)):
            if len(fs) < MIN_FACES:
                raise InvalidInputError(
                    f"the {side} face set has {len(fs)} usable face(s), at least {MIN_FACES} are needed; "
                    + ("use a longer video or one where the face is larger and frontal" if side == "patient" else "add more donor material")
                )
        if self.patient.size != self.donor.size:
            raise InvalidInputError(f"patient faces are {self.patient.size} px but donor faces {self.donor.size} px; extract both at one size")

    @property
    def size(self) -> int:
        return self.patient.size

    def save(self, directory: str | os.PathLike) -> Path:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.patient.save(d / "patient.npz")
        self.donor.save(d / "donor.npz")
        return d

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "TrainData":
        d = Path(directory)
        return cls(FaceSet.load(d / "patient.npz"), FaceSet.load(d / "donor.npz"))


@dataclass(frozen=True)
class TrainResult:
    checkpoint: str
    steps: int
    elapsed_s: float
    losses: dict[str, float]
    preview: str
    device: str
    spec: ModelSpec
    stopped_by: str  # "max_steps" | "max_minutes"
    history: list[dict[str, float]] = field(default_factory=list)


def resolve_spec(cfg: Any, spec: ModelSpec | None = None) -> ModelSpec:
    """The preset named in ``cfg`` (a SwapConfig) with its batch size / learning rate overrides."""
    s = spec or preset(cfg.preset)
    kw = {}
    if getattr(cfg, "batch_size", 0):
        kw["batch_size"] = int(cfg.batch_size)
    if getattr(cfg, "learning_rate", 0.0):
        kw["learning_rate"] = float(cfg.learning_rate)
    if kw:
        from dataclasses import replace

        s = replace(s, **kw)
    return s


def pick_device(device: Any = None):
    import torch

    if device is not None:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def checkpoint_path(p: str | os.PathLike) -> Path:
    p = Path(p)
    return p / CHECKPOINT if p.is_dir() else p


def save_checkpoint(
    path: str | os.PathLike,
    model: Any,
    optimizer: Any,
    step: int,
    elapsed_s: float,
    losses: dict[str, float],
    meta: dict[str, Any] | None = None,
    avg_model: Any = None,
) -> Path:
    """Atomic ``torch.save`` of state dicts and plain values (loadable with weights_only)."""
    import torch

    p = Path(path)
    blob = {
        "format": FORMAT,
        "spec": model.spec.to_dict(),
        "model": model.state_dict(),
        **({"model_avg": avg_model.state_dict()} if avg_model is not None else {}),
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        "step": int(step),
        "elapsed_s": float(elapsed_s),
        "losses": {k: float(v) for k, v in losses.items()},
        "meta": dict(meta or {}),
    }
    tmp = p.with_name(p.name + ".part")
    torch.save(blob, tmp)
    os.replace(tmp, p)
    return p


def load_checkpoint(path: str | os.PathLike, device: Any = "cpu") -> dict[str, Any]:
    """The checkpoint dict, loaded safely (``weights_only=True``); errors say what to do."""
    import torch

    p = checkpoint_path(path)
    if not p.is_file():
        raise ModelWeightsError(f"swap checkpoint {p} not found; train one with `deid swap train`")
    try:
        blob = torch.load(p, map_location=device, weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises several kinds for a bad file
        raise ModelWeightsError(f"{p}: not a loadable swap checkpoint ({type(e).__name__}: {e}); train again") from None
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ModelWeightsError(f"{p}: not a deid swap checkpoint (format {blob.get('format') if isinstance(blob, dict) else '?'}, expected {FORMAT})")
    return blob


def load_model(path: str | os.PathLike, device: Any = "cpu", averaged: bool = True):
    """(SwapModel in eval mode, checkpoint dict without the weights). ``averaged``: the
    running average of the weights when the checkpoint has one (what conversion uses)."""
    from .model import build_model

    blob = load_checkpoint(path, device)
    spec = ModelSpec.from_dict(blob["spec"])
    model = build_model(spec)
    try:
        model.load_state_dict(blob["model_avg"] if averaged and "model_avg" in blob else blob["model"])
    except RuntimeError as e:
        raise ModelWeightsError(f"{checkpoint_path(path)}: weights do not fit the model spec ({e})") from None
    model.to(device).eval()
    meta = {k: v for k, v in blob.items() if k not in ("model", "model_avg", "optimizer")}
    return model, meta


class ThreadTuner:
    """Chooses between 1 and N torch CPU threads while training, by timing ``probe``
    steps with each: after ``warm`` steps, again every ``every`` steps, and at once when
    steps get ``slow`` x slower than the chosen setting measured (for 3 steps in a row).

    Why: on a shared 2-core machine, two torch threads are ~1.7x faster than one when
    the machine is idle, but when another process keeps a core busy, OpenMP's barrier
    waits for the descheduled thread and a step becomes 4-5x *slower* than with one
    thread (measured here: 2.1 s vs 0.47 s a step of the small preset at load 5); the
    load changes within minutes, so the choice is re-made when steps slow down."""

    def __init__(self, n: int, every: int = 300, probe: int = 4, warm: int = 20, slow: float = 2.5):
        self.cands = sorted({1, max(1, int(n))})
        self.every, self.probe, self.slow = every, probe, slow
        self.warm_left = warm
        self.queue: list[int] = []
        self.times: dict[int, list[float]] = {c: [] for c in self.cands}
        self.best = self.cands[0]
        self.best_time: float | None = None
        self.since = 0
        self.slow_run = 0
        self.probes = 0
        self._last = -1

    def next_threads(self) -> int:
        if len(self.cands) == 1 or self.warm_left > 0:
            return self.best if len(self.cands) == 1 else self.cands[0]
        if not self.queue and (self.best_time is None or self.since >= self.every or self.slow_run >= 3):
            self.queue = [c for c in self.cands for _ in range(self.probe)]
            self.times = {c: [] for c in self.cands}
            self.probes += 1
        return self.queue[0] if self.queue else self.best

    def record(self, threads: int, seconds: float) -> None:
        if self.warm_left > 0:
            self.warm_left -= 1
        elif self.queue:
            c = self.queue.pop(0)
            if self._last == c:  # the first step after a switch is warm-up
                self.times[c].append(seconds)
            if not self.queue:
                med = {k: sorted(v)[len(v) // 2] for k, v in self.times.items() if v}
                if med:
                    self.best = min(med, key=med.get)
                    self.best_time = med[self.best]
                self.since, self.slow_run = 0, 0
        else:
            self.since += 1
            slow = self.best_time is not None and seconds > self.slow * self.best_time
            self.slow_run = self.slow_run + 1 if slow else 0
        self._last = threads


def _faces_tensor(fs: FaceSet, idx: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(fs.crops[idx].transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def preview(model: Any, data: TrainData, n: int = 6, device: Any = "cpu") -> np.ndarray:
    """Grid: patient faces | their reconstruction | swapped to the donor; donor faces |
    reconstruction. Contains the patient's face: write it only to private storage."""
    import torch

    rows: list[list[np.ndarray]] = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for fs, sides in ((data.patient, ("patient", "donor")), (data.donor, ("donor",))):
            idx = np.linspace(0, len(fs) - 1, min(n, len(fs))).round().astype(int)
            x = torch.from_numpy(_faces_tensor(fs, idx)).to(device)
            for_img = lambda t: (t.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)  # noqa: E731
            rows.append(list(fs.crops[idx]))
            for s in sides:
                rows.append(list(for_img(model(x, s)[0].float())))
    model.train(was_training)
    return grid_image(rows)


def fit(
    data: TrainData | str | os.PathLike,
    cfg: Any,
    out_dir: str | os.PathLike,
    *,
    report: Callable[[dict[str, Any]], None] | None = None,
    resume_from: str | os.PathLike | None = None,
    device: Any = None,
    spec: ModelSpec | None = None,
    init_from: str | os.PathLike | None = None,
    progress: bool = False,
    report_every: int = 50,
    checkpoint_every_s: float = 120.0,
    save_on_interrupt: bool = False,
) -> TrainResult:
    """Train (or resume) the shared-encoder / two-decoder model; see the module doc.

    ``data``: a :class:`TrainData` or a directory holding ``patient.npz`` / ``donor.npz``.
    ``cfg``: a :class:`deid.config.SwapConfig` (or a full Config: its ``swap`` section).
    ``init_from``: a checkpoint to start from (e.g. a donor-only pre-training); unlike
    ``resume_from`` its step count, clock and optimizer state are not carried over.
    ``save_on_interrupt``: on Ctrl-C / SIGTERM, write the checkpoint with the steps done
    so far before the interrupt goes on up (the donor pre-training keeps them; a
    patient's training does not, its run is abandoned).
    """
    import torch

    from .losses import mask_loss, reconstruction_loss
    from .model import build_model

    cfg = getattr(cfg, "swap", cfg)
    if not cfg.max_steps and not cfg.max_minutes:
        raise ConfigError("swap training needs a budget: set swap.max_steps and/or swap.max_minutes above 0")
    if not isinstance(data, TrainData):
        data = TrainData.load(data)
    spec = resolve_spec(cfg, spec)
    if data.size != spec.size:
        raise InvalidInputError(f"face sets are {data.size} px but preset {cfg.preset!r} trains on {spec.size} px; extract faces at {spec.size} px")
    dev = pick_device(device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / CHECKPOINT

    model = build_model(spec).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, betas=(0.5, 0.99), weight_decay=1e-4)
    step, elapsed0, losses = 0, 0.0, {"patient": math.nan, "donor": math.nan}
    avg_state = None
    if resume_from is not None:
        blob = load_checkpoint(resume_from, dev)
        if ModelSpec.from_dict(blob["spec"]).arch() != spec.arch():
            raise ConfigError(f"{resume_from}: checkpoint was trained with spec {blob['spec']}, not {spec.to_dict()}; resume with the same preset")
        model.load_state_dict(blob["model"])
        if blob.get("optimizer"):
            opt.load_state_dict(blob["optimizer"])
        step, elapsed0, losses = int(blob["step"]), float(blob["elapsed_s"]), dict(blob.get("losses", losses))
        avg_state = blob.get("model_avg")
    elif init_from is not None:
        blob = load_checkpoint(init_from, dev)
        if ModelSpec.from_dict(blob["spec"]).arch() != spec.arch():
            raise ConfigError(f"{init_from}: initial weights are for spec {blob['spec']}, not {spec.to_dict()}")
        model.load_state_dict(blob["model"])

    # Polyak average of the weights, used for conversion and the preview: with a
    # learning rate sized for minutes of CPU training, consecutive checkpoints differ
    # enough that the swap's distance to the patient wobbles around the gate's limit
    # (measured: 96 % of checks passing at one minute, 79 % two minutes later); the
    # average over ~1 / (1 - AVG_DECAY) steps does not.
    avg_model = build_model(spec).to(dev)
    avg_model.load_state_dict(avg_state if resume_from is not None and avg_state is not None else model.state_dict())
    for p_ in avg_model.parameters():
        p_.requires_grad_(False)
    avg_model.eval()

    use_amp = dev.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    seed = int(getattr(cfg, "seed", 0))
    rng = np.random.default_rng([seed, step])  # resumed runs draw new batches, reproducibly
    torch.manual_seed(seed * 100003 + step)
    pmasks, dmasks = data.patient.masks(), data.donor.masks()
    budget_s = float(cfg.max_minutes) * 60.0
    max_steps = int(cfg.max_steps)
    bs = spec.batch_size
    history: list[dict[str, float]] = []
    ema: dict[str, float] = {k: v for k, v in losses.items() if not math.isnan(v)}

    def done() -> str:
        if max_steps and step >= max_steps:
            return "max_steps"
        if budget_s and elapsed0 + (time.perf_counter() - t0) >= budget_s:
            return "max_minutes"
        return ""

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=max_steps or None, initial=step, unit="step", desc="swap train", leave=False)
    n_threads0 = torch.get_num_threads()
    tuner = ThreadTuner(n_threads0) if dev.type == "cpu" else None
    model.train()
    t0 = time.perf_counter()
    t_ckpt = t0
    t_rep, step_rep = t0, step
    stopped = done()
    step_start = step
    try:
        while not stopped:
            t_step = time.perf_counter()
            if tuner is not None:
                n_thr = tuner.next_threads()
                torch.set_num_threads(n_thr)
            ia = rng.integers(0, len(data.patient), bs)
            ib = rng.integers(0, len(data.donor), bs)
            xa, ya, ma = (torch.from_numpy(a).to(dev) for a in make_batch(data.patient.crops, pmasks, ia, rng))
            xb, yb, mb = (torch.from_numpy(a).to(dev) for a in make_batch(data.donor.crops, dmasks, ib, rng))
            with torch.autocast(dev.type, dtype=torch.float16, enabled=use_amp):
                ra, qa = model(xa, "patient")
                rb, qb = model(xb, "donor")
            la = reconstruction_loss(ra.float(), ya, ma) + 0.5 * mask_loss(None if qa is None else qa.float(), ma)
            lb = reconstruction_loss(rb.float(), yb, mb) + 0.5 * mask_loss(None if qb is None else qb.float(), mb)
            loss = la + lb
            if not torch.isfinite(loss):
                raise ModelWeightsError(f"swap training diverged at step {step} (loss {float(loss)}); lower swap.learning_rate")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            with torch.no_grad():
                decay = min(AVG_DECAY, (1.0 + step) / (10.0 + step))
                for pa, pm in zip(avg_model.parameters(), model.parameters()):
                    pa.lerp_(pm.detach(), 1.0 - decay)
            if tuner is not None:
                tuner.record(n_thr, time.perf_counter() - t_step)
            step += 1
            for k, v in (("patient", la.item()), ("donor", lb.item())):
                ema[k] = v if k not in ema else 0.95 * ema[k] + 0.05 * v
            if bar is not None:
                bar.update(1)
                if step % 10 == 0:
                    bar.set_postfix(patient=f"{ema['patient']:.3f}", donor=f"{ema['donor']:.3f}")
            stopped = done()
            now = time.perf_counter()
            saved = ""
            if stopped or now - t_ckpt >= checkpoint_every_s:
                saved = str(save_checkpoint(ckpt, model, opt, step, elapsed0 + now - t0, ema, {"seed": seed}, avg_model))
                t_ckpt = now
            if report is not None and (step % report_every == 0 or stopped or saved):
                m = {
                    "step": step,
                    "loss_patient": ema["patient"],
                    "loss_donor": ema["donor"],
                    "elapsed_s": round(elapsed0 + now - t0, 3),
                    "steps_per_s": round((step - step_rep) / max(now - t_rep, 1e-9), 3),
                }
                if tuner is not None:
                    m["threads"] = tuner.best
                if saved:
                    m["checkpoint"] = saved
                history.append({k: float(v) for k, v in m.items() if k != "checkpoint"})
                t_rep, step_rep = now, step
                report(m)
    except KeyboardInterrupt:
        if save_on_interrupt and step > step_start:
            save_checkpoint(ckpt, model, opt, step, elapsed0 + time.perf_counter() - t0, ema, {"seed": seed}, avg_model)
        if bar is not None:
            bar.close()
        raise
    if bar is not None:
        bar.close()
    elapsed = elapsed0 + time.perf_counter() - t0
    if not ckpt.is_file():  # budget already spent before the first step (resumed at the end)
        save_checkpoint(ckpt, model, opt, step, elapsed, ema, {"seed": seed}, avg_model)
    prev = out / PREVIEW
    try:
        import cv2

        cv2.imwrite(str(prev), cv2.cvtColor(preview(avg_model, data, device=dev), cv2.COLOR_RGB2BGR))
    except Exception as e:  # noqa: BLE001 - a preview must never fail a training
        log.warning("could not write the training preview: %s", e)
    finally:
        torch.set_num_threads(n_threads0)
    log.info("swap training stopped by %s after %d steps, %.1f s (losses %s)", stopped, step, elapsed, ema)
    return TrainResult(str(ckpt), step, elapsed, dict(ema), str(prev), str(dev), spec, stopped, history)
