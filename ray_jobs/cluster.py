"""Connecting to Ray: one place that calls ``ray.init``.

- ``RAY_ADDRESS`` set (a job submitted with ``ray job submit`` always has it, or a
  driver pointed at a cluster): join that cluster;
- otherwise (or ``local=True``): start a fresh one-node instance for this process —
  ``address="local"`` so a cluster someone else started on this machine is never joined
  by accident — without the dashboard, advertised on loopback, with
  ``ray.num_cpus`` CPUs (0 = all). Ray maps ``127.0.0.1`` to the node's own address for
  its internal RPC, so traffic stays inside this host.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)


def connect(cfg: Any, *, local: bool = False, runtime_env: dict[str, Any] | None = None) -> tuple[str, bool]:
    """``ray.init`` as described in the module doc. Returns ``(where, started)``:
    ``started`` is True when this call started Ray (the caller then shuts it down)."""
    import ray

    if ray.is_initialized():
        return "existing", False
    address = "" if local else os.environ.get("RAY_ADDRESS", "")
    common = dict(logging_level=logging.WARNING, log_to_driver=True, runtime_env=runtime_env)
    if address:
        ray.init(address=address, **common)
        return address, True
    ray.init(
        address="local",
        num_cpus=int(cfg.ray.num_cpus) or None,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        **common,
    )
    return "local", True


def quiet_data() -> None:
    """Ray Data's own progress bars and plan banners off: the archive prints its own
    summary (videos done / failed, frames/s)."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled"


def cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 1.0))
