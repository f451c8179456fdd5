"""A served engine's whole life: start Triton, run until Ctrl+C or SIGTERM, stop cleanly, report.

:func:`serve_until_stopped` is ``smat-deploy serve`` without the command line: it owns the signal
handlers while the server runs (the first SIGINT/SIGTERM stops the server after its in-flight
requests; a second one leaves at once with exit status 130) and restores the previous handlers
on the way out, also when the start fails.

:func:`plan_sessions` decides whether the server also hosts interactive sessions (``<name>_embed``,
``<name>_click``, ``<name>_end``) and on which pair of engines.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from smat_deploy.contract import MAX_SIDE, PRECISIONS, canonical_precision, pair_file, read_manifest
from smat_deploy.errors import SmatError
from smat_deploy.pair import PAIR_SUFFIXES, find_pair
from smat_deploy.pair import check_same_weights as same_weights
from smat_deploy.runtime import Runtime
from smat_deploy.runtime.sizing import MemoryGate, resolve_budget
from smat_deploy.serve.server import ServeConfig, SmatTritonServer

if TYPE_CHECKING:
    from smat_deploy.runtime.predictor import Predictor

#: The whole model a folder stands for when ``--engine`` names a folder.
WHOLE_MODEL_FILE = "smat.onnx"
TORCH_ENGINE = "torch"

#: The exit status of a second Ctrl+C / SIGTERM while stopping (128 + SIGINT), as for any interrupted command.
FORCED_EXIT_STATUS = 130


def whole_model(engine: str) -> str:
    """The engine ``Runtime`` opens: a folder stands for its ``smat.onnx``; anything else is itself."""
    path = Path(engine)
    if engine != TORCH_ENGINE and path.is_dir():
        whole = path / WHOLE_MODEL_FILE
        if not whole.is_file():
            raise SmatError(
                f"{path} has no {WHOLE_MODEL_FILE}: export it with smat-deploy export --interactive -o {path}"
            )
        return str(whole)
    return engine


@dataclass
class SessionPlan:
    """Whether sessions are served (``source`` for :meth:`Predictor.open`) and, when they are not, why."""

    source: str | None
    precision: str = "float32"
    reason: str = ""

    @property
    def enabled(self) -> bool:
        return self.source is not None


def _precision_of(model: Path) -> str:
    try:
        manifest = read_manifest(model.with_suffix(".json")) or {}
    except ValueError:
        manifest = {}
    try:
        return canonical_precision(str(manifest.get("precision", "float32")))
    except (KeyError, ValueError, SmatError):
        return "float32"


def plan_sessions(engine: str, requested: bool | None, *, torch_weights: bool = False) -> SessionPlan:
    """Where the interactive pair for ``engine`` (as given to ``--engine``) comes from.

    ``requested``: ``None`` (automatic: on for a folder holding the pair), ``True`` (``--sessions``: on, or
    an error saying what is missing) or ``False`` (off). ``torch_weights``: ``engine`` is ``torch`` or a
    checkpoint (the PyTorch reference embeds and decodes). A pair that is there is checked here
    (:func:`smat_deploy.pair.find_pair`): a bad one is refused as everywhere else.
    """
    if requested is False:
        return SessionPlan(None, reason="off (--no-sessions)")
    path = Path(engine)
    if torch_weights or engine == TORCH_ENGINE:
        if requested:
            return SessionPlan(engine)
        return SessionPlan(None, reason="off: the torch engine serves sessions with --sessions")
    folder = path if path.is_dir() else path.parent
    precision = "float32" if path.is_dir() or path.suffix.lower() != ".onnx" else _precision_of(path)
    if precision not in PRECISIONS:
        precision = "float32"
    encoder = Path(pair_file("encoder", precision)).stem
    if not any((folder / f"{encoder}{suffix}").is_file() for suffix in PAIR_SUFFIXES):
        why = f"{folder} has no {encoder}.onnx (smat-deploy export --interactive -o {folder} makes the pair)"
        if requested:
            raise SmatError(f"--sessions needs the interactive pair: {why}")
        return SessionPlan(None, reason=f"off: {why}")
    if not path.is_dir() and not requested:
        return SessionPlan(
            None, reason=f"off: the pair beside {path.name} is served with --sessions, or give the folder {folder}"
        )
    suffix = path.suffix.lower() if path.suffix.lower() in PAIR_SUFFIXES else None
    find_pair(folder, precision, suffix)  # one line for a bad pair, before any engine loads
    return SessionPlan(str(folder), precision=precision)


def check_same_weights(whole: str | os.PathLike[str] | None, weights_sha256: str) -> None:
    """Refuse a whole model and a pair exported from different weights (both manifests record a weights digest)."""
    same_weights(
        whole,
        weights_sha256,
        "export them together with smat-deploy export --interactive, or serve with --no-sessions",
    )


def apply_size_policy(runtime: Runtime, predictor: Predictor | None, config: ServeConfig) -> None:
    """One memory budget for everything the server runs, measured once both engines are loaded.

    The whole model and the sessions draw on it through one gate (a request waits rather than overrun it),
    and the sessions' cache (``--session-memory``) is set aside from it when sessions are served.
    """
    reserved = config.session_memory_mb if predictor is not None else 0.0
    budget = resolve_budget(config.size_policy, runtime.backend.device, reserved)
    if budget.call_mb <= 0:
        raise SmatError(
            f"the memory budget ({budget.total_mb:,.0f} MB: {budget.source}) leaves nothing for requests after what "
            f"the server holds ({budget.resident_mb:,.0f} MB) and --session-memory {config.session_memory_mb:g}; "
            "raise --max-memory-mb or lower --session-memory"
        )
    gate = MemoryGate(budget.call_mb)
    runtime.use_size_policy(config.size_policy, budget, gate)
    if predictor is not None:
        predictor.use_size_policy(config.size_policy, budget, gate)


def size_lines(runtime: Runtime) -> list[str]:
    """The processing bound the server advertises: what runs at full size, how larger photos are run, the budget."""
    sizing = runtime.sizing
    if sizing is None:
        return []
    policy, budget = sizing.policy, sizing.budget
    full = "x".join(map(str, sizing.largest_full_size()))
    cap = f", every photo at most {policy.max_side} px a side (--max-side)" if policy.max_side else ""
    return [
        f"  photos   up to {MAX_SIDE} px a side; at full size up to {full} (4:3){cap}; larger ones scaled to at "
        f"most {policy.scale_to} px (--scale-to) and their alpha brought back by {policy.upsampling} upsampling",
        f"           memory budget {budget.total_mb:,.0f} MB ({budget.source}; --max-memory-mb), "
        f"{budget.call_mb:,.0f} MB for requests",
    ]


@dataclass
class ServeSummary:
    """What the server did: requests, images and engine calls, from the batcher's counters; sessions' counters."""

    stats: dict = field(default_factory=dict)
    sessions: dict | None = None

    def lines(self) -> list[str]:
        """The sessions' line (when sessions were served), then :meth:`line`."""
        lines = []
        if self.sessions is not None:
            s = self.sessions
            lines.append(
                f"sessions: {s.get('embeds', 0)} photos embedded, {s.get('clicks', 0)} clicks answered, "
                f"{s.get('misses', 0)} unknown or expired session ids, {s.get('evictions', 0)} sessions evicted, "
                f"{s.get('ended', 0)} ended, {s.get('failed', 0)} requests refused"
            )
        return [*lines, self.line()]

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
        *size_lines(server.runtime),
        *session_lines(server),
        f"  Triton log {server.log_file}",
        "ready (Ctrl+C or SIGTERM stops)",
    ]


def session_lines(server: SmatTritonServer) -> list[str]:
    config = server.config
    if server.predictor is None:
        return [f"  sessions {server.sessions_reason or 'off'}"]
    info = server.predictor.info
    memory = f"{config.session_memory_mb:g} MB"
    return [
        f"  sessions '{config.session_model('embed')}' (image -> session_id), '{config.session_model('click')}' "
        f"(session_id + prompt -> alpha), '{config.session_model('end')}' (session_id -> ended)",
        f"           {info['backend']} {info['precision']} on {info['device']} ({info['source']}); up to "
        f"{config.session_count} sessions and {memory} (--session-count, --session-memory), least recently "
        f"used evicted first",
    ]


def serve_until_stopped(
    runtime: Runtime,
    config: ServeConfig,
    *,
    on_ready: Callable[[SmatTritonServer], None] = lambda server: None,
    log: Callable[[str], None] = lambda message: None,
    predictor: Predictor | None = None,
    sessions_reason: str = "",
) -> ServeSummary:
    """Serve ``runtime`` with ``config`` until SIGINT or SIGTERM; return what was served.

    ``on_ready(server)`` runs once Triton answers; ``log`` hears the start-up progress (preparing
    Triton's Python environment) and the one line said before a forced exit. ``predictor``: serve
    sessions on it (``sessions_reason`` says why not, when it is None).
    """
    stop = threading.Event()
    server = SmatTritonServer(runtime, config, progress=log, predictor=predictor, sessions_reason=sessions_reason)

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
    return ServeSummary(
        server.model.batcher.stats.as_dict() if server.model is not None else {},
        server.sessions.stats if server.sessions is not None else None,
    )
