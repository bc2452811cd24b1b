"""Per-patient face-swap training on Ray Train, many patients at once through Ray Tune.

One patient = one Ray Train ``TorchTrainer`` whose single worker runs
:func:`deid.swap.session.train_patient_model` unchanged (consent check, face sets,
:func:`deid.swap.train.fit`) with ``report`` turned into ``ray.train.report`` and the
device from ``ray.train.torch.get_device()``. Each trainer is built and fitted inside a
zero-CPU Ray task (:func:`train_patient_task`); at most ``ray.max_concurrent_trainings``
run at once, and the cluster's free CPUs/GPUs bound them further. The driver collects
them as they finish (:meth:`SwapModels.wait`), so a patient's videos are converted as
soon as *that* patient's model exists, while other patients still train — the training
(GPU) and rendering (CPU) pools overlap instead of running one after the other.

Privacy (as in the face-swap issue): a patient's model can re-create the patient's face.
It is written only to a private (0700) folder under ``ray.storage_path`` (default: the
run's private work folder), with Ray Train's checkpoint copies under the same storage;
conversion waits until the model exists, and the folder — plus Ray's copies — is
deleted as soon as every video of that patient is published (or failed), and at the end
of the run in any case, unless ``swap.keep_model`` is set (a warning names the path).
A killed run leaves the model in the private folder; the rerun resumes training from
its checkpoint and deletes it when done.

``ray.train_workers`` must be 1: :func:`deid.swap.train.fit` is a single-process loop
(the model is small); an archive scales out over patients, not within one. So the
trainer starts no ``torch.distributed`` process group (:mod:`ray_jobs.train_backend`),
whose store would listen on every interface.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- worker side


def cpu_training_threads(configured: int) -> int:
    """Torch threads a CPU training worker may use, set and returned.

    Ray sets ``OMP_NUM_THREADS`` to a worker's CPU reservation (1), which would pin CPU
    training to one thread for good. The trainer's :class:`deid.swap.train.ThreadTuner`
    times one thread against the ceiling set here and keeps the faster, again every few
    hundred steps and whenever steps slow down: while render actors keep the node's cores
    busy one thread wins (an OpenMP barrier waiting on a descheduled thread is 4-5x
    slower), once they are done the second core speeds training ~1.7x (the local demo:
    rendering ends half way through the 8-minute budget)."""
    import os

    import torch

    n = int(configured) or min(4, os.cpu_count() or 1)
    torch.set_num_threads(max(1, n))
    return torch.get_num_threads()


def train_loop_per_worker(config: dict) -> None:
    """Ray Train worker: train one patient's model into ``config["model_dir"]``."""
    import ray.train
    import ray.train.torch

    from deid.config import from_dict
    from deid.errors import DeidError

    import dataclasses

    cfg = from_dict(config["cfg"])
    cfg = dataclasses.replace(cfg, swap=dataclasses.replace(cfg.swap, donor=config["donor"]))  # the manifest's donor
    out = Path(config["model_dir"])
    out.mkdir(parents=True, exist_ok=True)
    resume = (out / "model.pt").is_file()
    ckpt = ray.train.get_checkpoint()
    if not resume and ckpt is not None:  # restarted on another node: take Ray's copy
        with ckpt.as_directory() as d:
            if (Path(d) / "model.pt").is_file():
                shutil.copy2(Path(d) / "model.pt", out / "model.pt")
                resume = True
    ck_dir = out / "ray_checkpoint"

    def report(m: dict) -> None:
        metrics = {k: v for k, v in m.items() if k != "checkpoint" and isinstance(v, (int, float))}
        if "checkpoint" in m and Path(m["checkpoint"]).is_file():
            # only the weights go to Ray's storage (not the face crops beside them)
            shutil.rmtree(ck_dir, ignore_errors=True)
            ck_dir.mkdir()
            shutil.copy2(m["checkpoint"], ck_dir / "model.pt")
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(str(ck_dir)))
        else:
            ray.train.report(metrics)

    identity = None
    if cfg.swap.gate:
        from deid.registry import IDENTITY_ENCODERS

        identity = IDENTITY_ENCODERS.create(cfg.audit.identity_backend)
    device = ray.train.torch.get_device()
    if device.type == "cpu":
        cpu_training_threads(cfg.ray.train_threads)
    try:
        from deid.swap.session import train_patient_model

        info = train_patient_model(config["videos"], cfg, out, identity=identity, device=device,
                                   report=report, resume=resume)
    except DeidError as e:  # deterministic (no consent, too few faces): report it, do not retry
        (out / "error.json").write_text(json.dumps({"error": str(e), "kind": e.kind}))
        ray.train.report({"failed": 1})
        return
    ray.train.report({"done": 1, "train_steps": int(info.get("train_steps", 0)), "patient_faces": int(info.get("patient_faces", 0))})


def train_patient_task(patient: str, job: dict, settings: dict) -> dict:
    """Ray task (0 CPUs: it only waits): fit the TorchTrainer of one patient and say how it
    went (``ok``, ``error``, ``kind``, ``train_steps``)."""
    import ray.train
    from ray.train.torch import TorchTrainer

    from .train_backend import SingleWorkerTorchConfig

    s = settings
    gpus = float(s["num_gpus"])
    res = {"CPU": 1.0, **({"GPU": gpus} if gpus else {})}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"cfg": s["cfg"], "videos": job["videos"], "model_dir": job["model_dir"], "donor": job["donor"]},
        # one worker: no torch.distributed process group, whose TCPStore would listen on
        # every interface (ray_jobs.train_backend)
        torch_config=SingleWorkerTorchConfig(),
        scaling_config=ray.train.ScalingConfig(num_workers=int(s["workers"]), use_gpu=gpus > 0, resources_per_worker=res),
        run_config=ray.train.RunConfig(
            name=job["name"],
            storage_path=s["storage"],
            failure_config=ray.train.FailureConfig(max_failures=int(s["max_failures"])),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
        ),
    )
    error, kind = "", ""
    try:
        trainer.fit()
    except Exception as e:  # noqa: BLE001 - reported as data to the driver
        error, kind = f"swap training failed: {type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}", "internal"
    err_file = Path(job["model_dir"]) / "error.json"
    if err_file.is_file():
        d = json.loads(err_file.read_text())
        error, kind = d["error"], d["kind"]
    ok = not error and (Path(job["model_dir"]) / "model.pt").is_file()
    steps = 0
    if ok and (Path(job["model_dir"]) / "session.json").is_file():
        steps = int(json.loads((Path(job["model_dir"]) / "session.json").read_text()).get("train_steps", 0))
    return {"patient": patient, "ok": int(ok), "error": error or ("" if ok else "no model was written"),
            "kind": kind or ("" if ok else "internal"), "train_steps": steps}


def pretrain_donor_task(donor_name: str, cfg_dict: dict) -> str:
    """Build a donor's pre-trained model once (:func:`deid.swap.pretrain.pretrain_donor`)
    before its patients train: otherwise every patient of that donor training at the
    same time would build it. Returns "" or the error (the patients then report theirs)."""
    from deid.config import from_dict
    from deid.errors import DeidError

    cfg = from_dict(cfg_dict)
    try:
        from deid.swap.donors import DonorLibrary
        from deid.swap.pretrain import pretrain_donor, pretrained_path
        from deid.swap.train import resolve_spec

        donor = DonorLibrary(cfg.swap.donor_library or None).get(donor_name)
        if not pretrained_path(donor, resolve_spec(cfg.swap)).is_file():
            pretrain_donor(donor, cfg, minutes=cfg.swap.donor_pretrain_minutes)
        return ""
    except DeidError as e:
        return str(e)


# ----------------------------------------------------------------------------- driver side


def training_runtime_env() -> dict:
    """The runtime environment of the training tasks: ``RAY_ADDRESS`` set to the cluster
    this driver is connected to, inherited by everything Ray Train starts under them.

    Ray Train V2's ``PlacementGroupCleaner`` (a detached actor beside each training
    controller) asks the State API whether the controller is alive, through a client
    that finds its cluster from ``RAY_ADDRESS`` or, without it, from the Ray processes
    running on the machine. deid's local Ray sets no ``RAY_ADDRESS``, so on a machine
    where another Ray runs as well (a second archive job writing to another folder,
    someone's ``ray start --head``) the lookup failed with "Found multiple active Ray
    instances" (a traceback at every training, the cleaner's watch gone), or took the
    cluster of the last ``ray start`` — another cluster, where the controller is not
    found, so the cleaner took it for dead and removed the training's placement group."""
    import ray

    return {"env_vars": {"RAY_ADDRESS": ray.get_runtime_context().gcs_address}}


class SwapModels:
    """The swap models of one archive run: train them, hand their folders to the plans,
    delete each as soon as its patient's videos are finished."""

    def __init__(self, run: Any, cfg: Any, *, echo: Callable[[str], None] = print):
        from deid.archive import private_mkdir
        from deid.errors import ConfigError

        if cfg.ray.train_workers != 1:
            raise ConfigError("ray.train_workers must be 1: the swap training loop is single-process; scale out over patients with ray.max_concurrent_trainings")
        self.run, self.cfg, self.echo = run, cfg, echo
        from deid.archive import swap_model_name, swap_name_key, swap_storage

        self.storage = private_mkdir(swap_storage(cfg, run.work_root))
        secret = swap_name_key(self.storage)
        self.jobs: dict[str, dict] = {}  # patient -> job
        self.remaining: dict[str, set[str]] = {}  # patient -> videos not finished yet
        self.errors: dict[str, tuple[str, str]] = {}
        for vid, plan in run.plans.items():
            if "swap" in plan.todo:
                self.remaining.setdefault(plan.entry.patient, set()).add(vid)
        for patient, vids in self.remaining.items():
            plans = [run.plans[v] for v in sorted(vids)]
            donors = {p.entry.donor for p in plans}
            if len(donors) != 1:
                self.errors[patient] = (f"patient {patient} has rows with different donors ({', '.join(sorted(donors))}); one model per patient needs one donor", "config")
                continue
            key = hashlib.sha256(json.dumps([sorted(x.input_sha256 for x in plans), plans[0].config_hashes["swap"]]).encode()).hexdigest()[:12]
            name = swap_model_name(patient, key, secret)
            self.jobs[patient] = {"videos": [p.entry.video for p in plans], "model_dir": str(self.storage / "models" / name), "name": name,
                                  "donor": donors.pop()}

    def start(self) -> None:
        """Start training: donors' pre-training first (when configured), then one Ray task
        per patient, at most ``ray.max_concurrent_trainings`` at a time (the cluster's free
        CPUs/GPUs bound it further). Returns at once; :meth:`wait` hands out the models."""
        from deid.archive import private_mkdir

        self._queue = sorted(self.jobs)
        self._inflight: dict[Any, str] = {}
        self._announced: set[str] = set()
        if not self.jobs:
            return
        private_mkdir(self.storage / "models")
        for j in self.jobs.values():
            private_mkdir(j["model_dir"])
        cfg = self.cfg
        self._pretrain_donors()
        self.echo(f"archive: training swap models for {len(self.jobs)} patient(s) on Ray Train "
                  f"({cfg.ray.max_concurrent_trainings} at a time, {cfg.ray.num_gpus_train:g} GPU each); "
                  "videos without a swap render meanwhile")
        self._settings = {"cfg": cfg.to_dict(), "num_gpus": cfg.ray.num_gpus_train, "workers": cfg.ray.train_workers,
                          "storage": str(self.storage / "ray_train"), "max_failures": cfg.ray.max_retries}
        self._submit()

    def _submit(self) -> None:
        import ray

        task = ray.remote(num_cpus=0, max_retries=self.cfg.ray.max_retries, runtime_env=training_runtime_env())(train_patient_task)
        while self._queue and len(self._inflight) < self.cfg.ray.max_concurrent_trainings:
            patient = self._queue.pop(0)
            self._inflight[task.remote(patient, self.jobs[patient], self._settings)] = patient

    @property
    def pending(self) -> bool:
        """Patients whose model is not decided yet."""
        return bool(self._queue or self._inflight or (set(self.remaining) - self._announced))

    def wait(self) -> set[str]:
        """Block until at least one more patient is decided (trained, or failed); give
        those patients' plans their model folder, or drop the swap from them with the
        error. Returns the patients decided by this call."""
        import ray

        decided = {p for p in self.remaining if p not in self._announced and (p in self.errors or p not in self.jobs)}
        if not decided and self._inflight:
            ray.wait(list(self._inflight), num_returns=1)  # one is done; take every one that is
            ready, _ = ray.wait(list(self._inflight), num_returns=len(self._inflight), timeout=0)
            for ref in ready:
                patient = self._inflight.pop(ref)
                try:
                    m = ray.get(ref)
                except Exception as e:  # noqa: BLE001 - the task died for good (retries spent)
                    m = {"ok": 0, "error": f"swap training failed: {type(e).__name__}: {e}", "kind": "internal"}
                if not m.get("ok"):
                    self.errors[patient] = (str(m.get("error") or "swap training failed"), str(m.get("kind") or "internal"))
                    self.echo(f"archive: no swap model for patient {patient}: {self.errors[patient][0]}")
                else:
                    self.echo(f"archive: swap model of patient {patient} trained on Ray Train ({m.get('train_steps', '?')} steps)")
                decided.add(patient)
            self._submit()
        for patient in sorted(decided):
            if patient in self.errors and patient not in self.jobs:
                self.echo(f"archive: no swap model for patient {patient}: {self.errors[patient][0]}")
        self._announced |= decided
        for vid, plan in list(self.run.plans.items()):
            patient = plan.entry.patient
            if "swap" not in plan.todo or patient not in decided:
                continue
            if patient in self.errors or patient not in self.jobs:
                err, kind = self.errors.get(patient, ("no swap model", "internal"))
                self.run.plans[vid] = plan.without_method("swap", f"{plan.entry.video}: {err}", kind)
            else:
                self.run.plans[vid] = plan.with_swap_model(self.jobs[patient]["model_dir"])
        return decided

    def train(self) -> None:
        """Train every patient's model and hand out all of them (start + wait for all)."""
        self.start()
        while self.pending:
            self.wait()

    def _pretrain_donors(self) -> None:
        import ray

        sc = self.cfg.swap
        if not sc.donor_pretrain or sc.donor_pretrain_minutes <= 0:
            return
        donors = sorted({j["donor"] for j in self.jobs.values()})
        gpus = self.cfg.ray.num_gpus_train
        task = ray.remote(num_cpus=1, num_gpus=gpus or None, max_retries=self.cfg.ray.max_retries)(pretrain_donor_task)
        refs = {task.remote(d, self.cfg.to_dict()): d for d in donors}
        for ref, d in refs.items():
            err = ray.get(ref)
            if err:
                log.warning("donor %s not pre-trained: %s", d, err)

    def video_finished(self, plan: Any) -> None:
        patient = plan.entry.patient
        left = self.remaining.get(patient)
        if left is None:
            return
        left.discard(plan.entry.video_id)
        if not left:
            self._delete(patient)

    def _delete(self, patient: str) -> None:
        self.remaining.pop(patient, None)
        job = self.jobs.get(patient)
        if job is None:
            return
        paths = [Path(job["model_dir"]), self.storage / "ray_train" / job["name"]]
        if self.cfg.swap.keep_model:
            log.warning("swap.keep_model is set: patient %s's model stays in %s (it can re-create the patient's face; delete it when done)",
                        patient, paths[0])
            return
        for p in paths:
            shutil.rmtree(p, ignore_errors=True)
            if p.exists():
                shutil.rmtree(p)  # second try: let the error say what could not be removed

    def stop_training(self, timeout_s: float = 30.0) -> None:
        """Cancel the trainings still running (a stopped run: Ctrl-C, SIGTERM, an error)
        and wait until they have ended, before their folders are deleted: a training left
        running goes on writing there — ``TrainData.save`` re-creates the model folder
        with the patient's face crops, a checkpoint writes ``model.pt`` — until the
        driver's Ray shuts down, which happens after the deletion. Force-cancelling a
        training's task ends its worker process, and with it the Ray Train controller and
        worker it owns."""
        import ray

        refs = list(getattr(self, "_inflight", None) or {})
        if not refs:
            return
        for ref in refs:
            try:
                ray.cancel(ref, force=True, recursive=True)
            except Exception as e:  # noqa: BLE001 - already finished, or Ray is going down
                log.debug("cancelling a swap training: %s", e)
        try:
            ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        except Exception as e:  # noqa: BLE001
            log.debug("waiting for cancelled swap trainings: %s", e)
        self._inflight.clear()
        self._queue = []

    def cleanup(self) -> None:
        """End of the run: stop the trainings still running, delete whatever is left
        (failed or interrupted patients), and Tune's bookkeeping."""
        self.stop_training()
        for patient in list(self.remaining):
            self._delete(patient)
        if not self.cfg.swap.keep_model:
            for sub in ("models", "ray_train"):
                try:
                    (self.storage / sub).rmdir()
                except OSError:
                    pass
            if not self.cfg.ray.storage_path and not any((self.storage / sub).exists() for sub in ("models", "ray_train")):
                # the run's own storage, empty: its naming key goes with it (a storage the
                # user named may be shared by other jobs, which keep using the key)
                (self.storage / ".name-key").unlink(missing_ok=True)
            try:
                self.storage.rmdir()
            except OSError:
                pass
