"""Connecting to Ray: one place that calls ``ray.init``.

- ``RAY_ADDRESS`` set (a job submitted with ``ray job submit`` always has it, or a
  driver pointed at a cluster): join that cluster;
- otherwise (or ``local=True``): start a fresh one-node instance for this process —
  ``address="local"`` so a cluster someone else started on this machine is never joined
  by accident — on loopback only (see :func:`loopback_only`), with ``ray.num_cpus`` CPUs
  (0 = all). When the run trains swap models (``train=True``) its dashboard is started
  too, bound to 127.0.0.1: it serves the State API through which Ray Train V2's
  ``PlacementGroupCleaner`` watches the training controller; without it the cleaner's
  queries fail, it eventually takes the controller for dead and removes the training's
  placement group, killing a healthy training worker every few minutes (seen on the
  demo: "Failed to query Ray Train Controller actor state", then "A worker health check
  failed"). Without training the dashboard is left off: on a small machine its
  processes cost seconds of CPU that the job needs.
"""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)

LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def loopback_only() -> None:
    """Make a Ray started from this process (and its raylet and workers, which inherit the
    environment) listen on 127.0.0.1 only.

    Ray deliberately turns ``--node-ip-address=127.0.0.1`` / ``_node_ip_address`` into the
    host's routable address (``services.resolve_ip_for_localhost``), so a "local" Ray's GCS,
    raylet and workers otherwise listen on every interface. Ray keeps loopback only where
    it treats the machine as single-node, which the variable below selects (read when
    ``ray`` is imported, hence also set on the already imported constant). Only for a
    one-node Ray: a node started this way cannot join or accept other nodes."""
    os.environ[LOOPBACK_ENV] = "0"
    import ray._private.ray_constants as rc

    rc.ENABLE_RAY_CLUSTER = False


def connect(cfg: Any, *, local: bool = False, train: bool = True, runtime_env: dict[str, Any] | None = None) -> tuple[str, bool]:
    """``ray.init`` as described in the module doc. Returns ``(where, started)``:
    ``started`` is True when this call started Ray (the caller then shuts it down)."""
    import ray

    from deid._signals import rearm  # SIGTERM: unwind like Ctrl-C, not Ray's native handler

    if ray.is_initialized():
        return "existing", False
    address = "" if local else os.environ.get("RAY_ADDRESS", "")
    common = dict(logging_level=logging.WARNING, log_to_driver=True, runtime_env=runtime_env)
    if address:
        hint = ("a driver takes the head's GCS address (HEAD:6379) or ray://HEAD:10001; the dashboard's http://HEAD:8265 "
                "is for `ray job submit`")
        from deid.errors import ConfigError

        refused = unreachable(address)
        if refused:  # ray.init would retry for minutes before saying so
            raise ConfigError(f"cannot join the Ray cluster at RAY_ADDRESS={address!r} ({refused}); {hint}")
        try:
            ray.init(address=address, **common)
            rearm()
        except (ValueError, ConnectionError, RuntimeError) as e:
            raise ConfigError(f"cannot join the Ray cluster at RAY_ADDRESS={address!r} ({type(e).__name__}: {e}); {hint}") from None
        return address, True
    loopback_only()
    _quiet_token_notice()
    ray.init(
        address="local",
        num_cpus=int(cfg.ray.num_cpus) or None,
        include_dashboard=bool(train),  # Ray Train needs the State API (see the module doc)
        dashboard_host="127.0.0.1",
        _node_ip_address="127.0.0.1",
        **common,
    )
    rearm()
    _private_session_dir()
    return "local", True


def _private_session_dir() -> None:
    """Make the local Ray's session folder (its logs, which name input files and patient
    ids in messages) readable by this user only: Ray creates it world-readable under
    /tmp/ray, which on a shared server lets every account read them. Ray's own processes
    run as this user and are unaffected."""
    import ray

    try:
        d = ray._private.worker._global_node.get_session_dir_path()  # no public API for it
        os.chmod(d, 0o700)
    except (AttributeError, OSError) as e:  # another Ray version, or not ours to change
        logging.getLogger(__name__).warning("could not make Ray's session folder private (%s): its logs may be readable "
                                            "by other accounts on this machine", e)


def unreachable(address: str, timeout_s: float = 5.0) -> str:
    """Why nothing at ``address`` (``HOST:PORT``, ``ray://HOST:PORT``, ``http(s)://HOST:PORT``)
    accepts a TCP connection, or "" when something does (or the address names no port,
    e.g. ``auto``: left to ``ray.init``). ``ray.init`` on a GCS address where nothing
    listens retries for about five minutes before it fails; this says so in seconds."""
    import socket
    from urllib.parse import urlsplit

    a = address.strip()
    try:
        u = urlsplit(a if "://" in a else f"tcp://{a}")
        host, port = u.hostname, u.port
    except ValueError:
        return ""
    if not host or port is None:
        return ""
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as e:
        return f"nothing accepts connections at {host}:{port}: {e.strerror or type(e).__name__}"
    return ""


class _DropTokenNotice(logging.Filter):
    """Drops Ray's "Token authentication is enabled for this Ray cluster" notice, printed
    at every start of a local cluster: token authentication on is the safe default and
    deid's local Ray listens on 127.0.0.1 only. Every other message of that logger (its
    warning that authentication is *disabled*, above all) still shows."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Token authentication is enabled")


def _quiet_token_notice() -> None:
    lg = logging.getLogger("ray._private.authentication.authentication_token_setup")
    if not any(isinstance(f, _DropTokenNotice) for f in lg.filters):
        lg.addFilter(_DropTokenNotice())


def configure_data() -> None:
    """Ray Data's own progress bars and plan banners off: the archive prints its own
    summary (videos done / failed, frames/s). And its actor pools may grow back: they
    keep one task in flight per actor (a segment or video renders for seconds to
    minutes), so their utilisation tops out at 100 %, under Ray Data's default threshold
    for adding actors (175 %, which assumes two tasks per actor): a pool that shrank
    while idle (waiting for swap training) could never grow again, and Ray warned so at
    every run."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.autoscaling_config.actor_pool_util_upscaling_threshold = 1.0
    ctx.enable_progress_bars = False
    ctx.enable_operator_progress_bars = False
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "progress bars disabled"


def cluster_cpus() -> float:
    import ray

    return float(ray.cluster_resources().get("CPU", 1.0))
