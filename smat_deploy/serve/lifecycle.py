"""A served engine's whole life: start Triton, run until Ctrl+C or SIGTERM, stop cleanly, report.

:func:`serve_until_stopped` is ``smat-deploy serve`` without the command line: it owns the signal
handlers while the server runs (the first SIGINT/SIGTERM stops the server after its in-flight
requests; a second one leaves at once with exit status 130) and restores the previous handlers
on the way out, also when the start fails.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from smat_deploy.runtime import Runtime
from smat_deploy.serve.server import ServeConfig, SmatTritonServer

#: The exit status of a second Ctrl+C / SIGTERM while stopping (128 + SIGINT), as for any interrupted command.
FORCED_EXIT_STATUS = 130


@dataclass
class ServeSummary:
    """What the server did: requests, images and engine calls, from the batcher's counters."""

    stats: dict = field(default_factory=dict)

    def line(self) -> str:
        stats = self.stats
        return (
            f"stopped: {stats.get('requests', 0)} requests, {stats.get('images', 0)} images in "
            f"{stats.get('engine_calls', 0)} engine calls (mean batch {stats.get('mean_batch', 0)}, "
            f"largest {stats.get('largest_batch', 0)})"
        )


def ready_lines(server: SmatTritonServer) -> list[str]:
    """What a user needs once the server is up: the model, its addresses, the batching, Triton's log."""
    info, config, urls = server.runtime.info, server.config, server.urls
    name = config.model_name
    return [
        f"serving model '{name}': {info.backend} {info.precision} on {info.device} ({info.engine})",
        f"  HTTP     {urls['http']}  (POST /v2/models/{name}/infer, GET /v2/health/ready)",
        f"  gRPC     {urls['grpc']}",
        f"  metrics  {urls['metrics']}",
        f"  batching up to {config.max_batch} same-size images per engine call, queue delay "
        f"{config.max_delay_ms:g} ms, {config.request_slots} requests at once",
        f"  Triton log {server.log_file}",
        "ready (Ctrl+C or SIGTERM stops)",
    ]


def serve_until_stopped(
    runtime: Runtime,
    config: ServeConfig,
    *,
    on_ready: Callable[[SmatTritonServer], None] = lambda server: None,
    log: Callable[[str], None] = lambda message: None,
) -> ServeSummary:
    """Serve ``runtime`` with ``config`` until SIGINT or SIGTERM; return what was served.

    ``on_ready(server)`` runs once Triton answers; ``log`` hears the start-up progress (preparing
    Triton's Python environment) and the one line said before a forced exit.
    """
    stop = threading.Event()
    server = SmatTritonServer(runtime, config, progress=log)

    def on_signal(*_: object) -> None:
        if stop.is_set():  # a second Ctrl+C / SIGTERM while stopping: leave now (Triton gets SIGTERM with us)
            log("error: stopped without waiting for in-flight requests")
            os._exit(FORCED_EXIT_STATUS)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        on_ready(server)
        server.wait(stop)
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return ServeSummary(server.model.batcher.stats.as_dict() if server.model is not None else {})
