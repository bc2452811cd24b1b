"""The torch backend of a patient's trainer: Ray Train's, without ``torch.distributed``.

``ray.train.torch.TorchTrainer``'s default backend starts a ``torch.distributed``
process group for its workers, even for one: worker 0 runs a TCPStore that listens on
*every* interface (``*:<port>``, whatever ``MASTER_ADDR`` says), so a local run that
trains a swap was not loopback-only any more (a Ray job on a machine with a patient
archive, reachable from the network). A patient's training is one worker
(``ray.train_workers`` must be 1: :func:`deid.swap.train.fit` is a single-process loop)
and never communicates with another, so :class:`SingleWorkerTorchConfig` keeps the
trainer and its Ray Train structure (placement group, health checks, checkpoints in
``storage_path``, restarts, ``ray.train.report``, ``ray.train.torch.get_device``, the
CUDA device set for the training function) and replaces only the backend: no process
group, hence no TCPStore and no port. Ray Train's own ``TorchftConfig`` replaces the
backend the same way. More than one worker is refused here rather than left unconnected.

Imports Ray Train at import time: imported only where a trainer is built (inside the
training task) and, unpickling the config, by Ray Train's controller.
"""

from __future__ import annotations

from dataclasses import dataclass

from ray.train.backend import Backend
from ray.train.torch import TorchConfig


class _NoProcessGroup(Backend):
    """Starts nothing: the one worker trains alone (see the module doc)."""

    def on_start(self, worker_group, backend_config) -> None:  # noqa: ANN001 - Ray Train's signature
        if len(worker_group) != 1:
            raise RuntimeError(f"{type(backend_config).__name__} trains on one worker, got {len(worker_group)}: "
                               "ray.train_workers must be 1")


@dataclass
class SingleWorkerTorchConfig(TorchConfig):
    """:class:`ray.train.torch.TorchConfig` for one worker without ``torch.distributed``."""

    @property
    def backend_cls(self):  # noqa: ANN201 - Ray Train's property
        return _NoProcessGroup
