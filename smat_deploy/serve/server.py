"""``smat-deploy serve``: a real Triton Inference Server hosting any smat-deploy engine through NVIDIA PyTriton.

Clients speak the standard KServe v2 protocol over HTTP and gRPC (any Triton client, any language) to one
model, by default ``smat``:

| | name | dtype | shape | |
|---|---|---|---|---|
| input | ``image`` | FP32 | ``[b, 3, H, W]`` | RGB in [0, 1] |
| input | ``prompt`` | FP32 | ``[b, 1, H, W]`` | optional: 1 = marked; absent = automatic |
| input | ``state`` | FP32 | ``[b, 1]`` | optional: 1 interactive, 0 automatic; absent = derived from the prompt |
| output | ``alpha`` | FP32 | ``[b, 1, H, W]`` | alpha in [0, 1] |

**How requests are batched.** Triton hands every request to the model on its own (``max_batch_size: 0``,
several model instances so that requests arrive concurrently), and the model checks it exactly as
:class:`~smat_deploy.runtime.Runtime` does before it joins a queue. :class:`~smat_deploy.serve.batcher.ShapeBatcher`
then runs requests of the same size together, up to ``max_batch`` images per engine call. Triton's own
dynamic batcher is not used here on purpose: PyTriton can only fail a whole Triton batch, so one malformed
request would take down the well-formed requests batched with it. Here a bad request gets its own error
and no other request notices. (A repository from ``smat-deploy triton`` runs the ONNX or TensorRT engine on
Triton's native backends and uses Triton's dynamic batcher.)

**Sessions.** With an interactive pair (:class:`~smat_deploy.runtime.predictor.Predictor`), three more models
serve clicks without re-sending the photo: ``<name>_embed`` (``image [1,3,H,W]`` -> ``session_id`` BYTES ``[1]``,
``height`` and ``width`` INT32 ``[1]``) embeds it once and keeps the embedding in a
:class:`~smat_deploy.serve.sessions.SessionCache`; ``<name>_click`` (``session_id``, optional ``prompt [1,1,H,W]``
and ``state [1,1]`` -> ``alpha [1,1,H,W]``) decodes from it; ``<name>_end`` (``session_id`` -> ``ended`` BOOL ``[1]``)
lets it go. The whole model ``<name>`` is unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import re
import socket
import tempfile
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from smat_deploy.contract import MAX_SIDE
from smat_deploy.errors import SmatError
from smat_deploy.runtime import Runtime
from smat_deploy.runtime.inputs import prepare_inputs
from smat_deploy.runtime.sizing import SizePolicy
from smat_deploy.serve.batcher import ShapeBatcher
from smat_deploy.serve.sessions import SessionCache

if TYPE_CHECKING:
    from smat_deploy.runtime.predictor import Predictor

START_ATTEMPTS = 5
#: How PyTriton's start-up race shows: model instances other than the first fetch their configuration from the
#: first one over a socket, and give up after 1 s (the socket is not there yet, or not listening yet).
_HANDSHAKE_RACE = ("Timeout occurred while waiting for config file", "ConnectionRefusedError")
MODEL_NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
#: The session models' names: the whole model's name plus these.
SESSION_SUFFIXES = {"embed": "_embed", "click": "_click", "end": "_end"}


class BadRequest(SmatError):
    """A request the model refuses. Its client receives the reason, without the server's stack.

    PyTriton sends the client the formatted traceback of whatever the model raised; reporting no
    traceback here leaves just ``smat_deploy.serve.server.BadRequest: <reason>`` in the error message.
    """

    @property
    def __traceback__(self) -> None:  # type: ignore[override]
        return None

    @__traceback__.setter
    def __traceback__(self, _value: object) -> None:
        pass


def check_model_name(name: str) -> str:
    if not MODEL_NAME_PATTERN.fullmatch(name):
        raise SmatError(f"model name {name!r} must be letters, digits, '_', '.' or '-' (and not start with . or -)")
    return name


@dataclass(frozen=True)
class ServeConfig:
    """Where and how the server listens and batches."""

    model_name: str = "smat"
    host: str = "0.0.0.0"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    max_batch: int = 8
    max_delay_ms: float = 5.0
    instances: int | None = None
    #: How photos of any size are run (the budget, the caps, the upsampling): the same rule as ``matte``.
    size_policy: SizePolicy = field(default_factory=SizePolicy)
    request_timeout_s: float = 600.0
    exit_timeout_s: int = 10
    log_file: Path | None = None
    session_count: int = 32
    session_memory_mb: float = 1024.0

    @property
    def request_slots(self) -> int:
        """Model instances, i.e. requests Triton hands over at once: enough to fill one batch while another runs."""
        return self.instances if self.instances is not None else max(2, 2 * self.max_batch)

    @property
    def session_slots(self) -> int:
        """Model instances of ``<name>_embed`` and of ``<name>_click``: requests answered at once (no batching)."""
        return self.instances if self.instances is not None else 4

    def session_model(self, kind: str) -> str:
        """``<name>_embed``, ``<name>_click`` or ``<name>_end``."""
        return f"{self.model_name}{SESSION_SUFFIXES[kind]}"

    def validate(self) -> ServeConfig:
        check_model_name(self.model_name)
        ports = {"--http-port": self.http_port, "--grpc-port": self.grpc_port, "--metrics-port": self.metrics_port}
        for option, port in ports.items():
            if not 1 <= port <= 65535:
                raise SmatError(f"{option} must be 1..65535, got {port}")
        if len(set(ports.values())) != len(ports):
            raise SmatError(f"the HTTP, gRPC and metrics ports must differ, got {sorted(ports.values())}")
        if self.max_batch < 1:
            raise SmatError("--max-batch must be at least 1")
        if self.max_delay_ms < 0:
            raise SmatError("--max-queue-delay-ms cannot be negative")
        if self.instances is not None and self.instances < 1:
            raise SmatError("--instances must be at least 1")
        if self.session_count < 1:
            raise SmatError(f"--session-count must be at least 1, got {self.session_count}")
        if not self.session_memory_mb > 0:
            raise SmatError(f"--session-memory must be a positive number of MB, got {self.session_memory_mb:g}")
        return self

    def check_ports(self) -> None:
        """One line, before anything starts, when a port is taken."""
        for option, port in (
            ("--http-port", self.http_port),
            ("--grpc-port", self.grpc_port),
            ("--metrics-port", self.metrics_port),
        ):
            check_port_free(self.host, port, option)


def check_port_free(host: str, port: int, option: str) -> None:
    """Fail in one line, before anything starts, when ``port`` is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As servers do: connections of an earlier server still in TIME_WAIT do not make the port "in use".
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise SmatError(
                    f"port {port} is already in use on {host}; free it or choose another with {option}"
                ) from None
            raise SmatError(f"cannot listen on {host}:{port} ({option}): {err.strerror}") from None


def check_request_size(engine: Runtime | Predictor, batch: int, height: int, width: int) -> None:
    """Refuse, in one line, a request no size plan can serve: a side above the contract's bound, or arrays too
    large for the memory budget even before the engine runs (the request's own copies count too)."""
    if max(height, width) > MAX_SIDE:
        raise SmatError(f"image is {width}x{height} (WxH); this server takes sides up to {MAX_SIDE}")
    sizing = engine.sizing
    if sizing is None:
        return
    plan = sizing.plan(1, height, width)  # one line when even the smallest size does not fit
    request_mb = batch * height * width * (3 + 1 + 1) * 4 / 1e6  # the request as Triton hands it over
    if request_mb + plan.predicted_mb > sizing.budget.call_mb:
        raise SmatError(
            f"a request of {batch} images of {width}x{height} needs {request_mb + plan.predicted_mb:,.0f} MB, more "
            f"than the {sizing.budget.call_mb:,.0f} MB this server gives one request (--max-memory-mb): send fewer "
            "or smaller images"
        )


class SmatModel:
    """The served model: every request is checked on its own, then batched with others of its size.

    Safe to call from many threads at once (one per Triton model instance).
    """

    def __init__(self, runtime: Runtime, config: ServeConfig) -> None:
        self.runtime = runtime
        self.config = config
        self.batcher = ShapeBatcher(self._run, config.max_batch, config.max_delay_ms / 1000.0)

    def _run(self, image: np.ndarray, prompt: np.ndarray, state: np.ndarray) -> np.ndarray:
        return self.runtime(image, prompt, state)

    def infer(self, data: Mapping[str, np.ndarray]) -> np.ndarray:
        """One request's inputs (``image``, optional ``prompt`` and ``state``) -> ``alpha [b,1,H,W]``."""
        image = data.get("image")
        if image is None:
            raise SmatError("the request has no 'image' input")
        if image.ndim != 4:
            raise SmatError(f"image must be [batch, 3, height, width], got shape {list(image.shape)}")
        batch, _, height, width = (int(d) for d in image.shape)
        if batch > self.config.max_batch:
            raise SmatError(f"a request may hold at most {self.config.max_batch} images (--max-batch), got {batch}")
        check_request_size(self.runtime, batch, height, width)
        prompt, state = data.get("prompt"), data.get("state")
        prepared = prepare_inputs(
            np.array(image, dtype=np.float32),  # a private, writable copy of Triton's buffer
            None if prompt is None else np.array(prompt, dtype=np.float32),
            None if state is None else np.array(state, dtype=np.float32),
        )
        self.runtime.backend.limits.check(batch, height, width, source=self.runtime.backend.source)
        future = self.batcher.submit(prepared.image, prepared.prompt, prepared.state)
        try:
            return future.result(timeout=self.config.request_timeout_s)
        except FutureTimeout:
            raise SmatError(f"no alpha after {self.config.request_timeout_s:g} s; the engine is overloaded") from None

    def __call__(self, requests: Sequence[object]) -> list[dict[str, np.ndarray]]:
        """PyTriton's inference callable: a list of requests (one, as Triton does not batch here) -> responses."""
        try:
            return [{"alpha": self.infer(getattr(request, "data", request))} for request in requests]
        except SmatError as err:
            raise BadRequest(str(err)) from None

    def close(self) -> None:
        self.batcher.close()


def _session_id(data: Mapping[str, np.ndarray]) -> object:
    value = data.get("session_id")
    if value is None:
        raise SmatError("the request has no 'session_id' input")
    flat = np.asarray(value).reshape(-1)
    if flat.size != 1:
        raise SmatError(f"session_id must hold one id, got {flat.size}")
    return flat[0]


class SessionModels:
    """The session models' work: ``embed`` a photo into the cache, ``click`` on it, ``end`` it.

    Safe to call from many threads at once. Requests are not batched: a click is one decoder run on
    one cached embedding.
    """

    def __init__(self, predictor: Predictor, config: ServeConfig) -> None:
        self.predictor = predictor
        self.config = config
        self.cache = SessionCache(config.session_count, int(config.session_memory_mb * 1e6))
        self._lock = threading.Lock()
        self.counts = {"embeds": 0, "clicks": 0, "failed": 0}

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] += 1

    def embed(self, data: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``image [1,3,H,W]`` -> a new session: ``session_id``, ``height``, ``width``."""
        image = data.get("image")
        if image is None:
            raise SmatError("the request has no 'image' input")
        if image.ndim != 4 or image.shape[0] != 1:
            raise SmatError(f"a session holds one photo: image must be [1, 3, height, width], got {list(image.shape)}")
        height, width = int(image.shape[2]), int(image.shape[3])
        check_request_size(self.predictor, 1, height, width)
        embedding = self.predictor.embed(np.array(image, dtype=np.float32))
        session_id = self.cache.put(embedding)
        self._count("embeds")
        return {
            "session_id": np.array([session_id.encode("ascii")], dtype=np.bytes_),
            "height": np.array([height], np.int32),
            "width": np.array([width], np.int32),
        }

    def click(self, data: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``session_id`` with an optional ``prompt [1,1,H,W]`` and ``state [1,1]`` -> ``alpha [1,1,H,W]``."""
        embedding = self.cache.get(_session_id(data))
        prompt, state = data.get("prompt"), data.get("state")
        alpha = self.predictor.predict(
            embedding,
            None if prompt is None else np.array(prompt, dtype=np.float32),
            None if state is None else np.array(state, dtype=np.float32),
        )
        self._count("clicks")
        return {"alpha": np.asarray(alpha, dtype=np.float32)}

    def end(self, data: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``session_id`` -> ``ended``: whether the session was held (it is not any more)."""
        return {"ended": np.array([self.cache.drop(_session_id(data))], dtype=np.bool_)}

    def callable(self, kind: str) -> Callable[[Sequence[object]], list[dict[str, np.ndarray]]]:
        """PyTriton's inference callable for ``kind`` (``embed``, ``click`` or ``end``)."""
        work = getattr(self, kind)

        def infer_func(requests: Sequence[object]) -> list[dict[str, np.ndarray]]:
            try:
                return [work(getattr(request, "data", request)) for request in requests]
            except SmatError as err:
                self._count("failed")
                raise BadRequest(str(err)) from None

        return infer_func

    @property
    def stats(self) -> dict:
        with self._lock:
            counts = dict(self.counts)
        return {**counts, **self.cache.stats.as_dict()}


def _session_tensors() -> dict[str, tuple[list, list]]:
    from pytriton.model_config import Tensor

    session_id = Tensor(name="session_id", dtype=np.bytes_, shape=(1,))
    return {
        "embed": (
            [Tensor(name="image", dtype=np.float32, shape=(1, 3, -1, -1))],
            [
                session_id,
                Tensor(name="height", dtype=np.int32, shape=(1,)),
                Tensor(name="width", dtype=np.int32, shape=(1,)),
            ],
        ),
        "click": (
            [
                session_id,
                Tensor(name="prompt", dtype=np.float32, shape=(1, 1, -1, -1), optional=True),
                Tensor(name="state", dtype=np.float32, shape=(1, 1), optional=True),
            ],
            [Tensor(name="alpha", dtype=np.float32, shape=(1, 1, -1, -1))],
        ),
        "end": ([session_id], [Tensor(name="ended", dtype=np.bool_, shape=(1,))]),
    }


def _tensors():
    from pytriton.model_config import Tensor

    inputs = [
        Tensor(name="image", dtype=np.float32, shape=(-1, 3, -1, -1)),
        Tensor(name="prompt", dtype=np.float32, shape=(-1, 1, -1, -1), optional=True),
        Tensor(name="state", dtype=np.float32, shape=(-1, 1), optional=True),
    ]
    outputs = [Tensor(name="alpha", dtype=np.float32, shape=(-1, 1, -1, -1))]
    return inputs, outputs


def _summary(err: Exception) -> str:
    """The first line of an error and, for a multi-line one, its last ``SomethingError: ...`` line."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    causes = [line for line in lines[1:] if re.match(r"^[\w.]+(Error|Exception): ", line)]
    return lines[0] if not causes else f"{lines[0].rstrip(':')} ... {causes[-1]}"


def _log_tail(path: Path, lines: int = 5) -> str:
    with contextlib.suppress(OSError):
        text = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
        errors = [line for line in text if line[:1] == "E"] or text
        return " | ".join(errors[-lines:])
    return "(no server log)"


class SmatTritonServer:
    """Triton (through PyTriton) serving one :class:`SmatModel`: ``start()``, ``wait(stop_event)``, ``stop()``."""

    def __init__(
        self,
        runtime: Runtime,
        config: ServeConfig,
        progress: Callable[[str], None] | None = None,
        predictor: Predictor | None = None,
        sessions_reason: str = "",
    ) -> None:
        self.config = config.validate()
        self.runtime = runtime
        self.progress = progress
        self.predictor = predictor
        #: Why sessions are not served, when ``predictor`` is None.
        self.sessions_reason = sessions_reason
        if predictor is not None:
            for kind in SESSION_SUFFIXES:
                name = config.session_model(kind)
                if len(name) > 128:
                    raise SmatError(f"--name is too long: the session model {name[:40]}... exceeds 128 characters")
        self.model: SmatModel | None = None
        self.sessions: SessionModels | None = None
        self._triton = None
        self._logdir: tempfile.TemporaryDirectory | None = None
        self.log_file = config.log_file

    @property
    def urls(self) -> dict[str, str]:
        host = "localhost" if self.config.host in ("0.0.0.0", "::") else self.config.host
        return {
            "http": f"{host}:{self.config.http_port}",
            "grpc": f"{host}:{self.config.grpc_port}",
            "metrics": f"http://{host}:{self.config.metrics_port}/metrics",
        }

    def start(self) -> None:
        from smat_deploy.serve.environment import prepare

        config = self.config
        config.check_ports()
        prepare(self.progress)
        logging.getLogger("pytriton").setLevel(logging.ERROR)
        from pytriton.model_config import ModelConfig
        from pytriton.triton import Triton, TritonConfig

        if self.log_file is None:
            self._logdir = tempfile.TemporaryDirectory(prefix="smat-serve-")
            self.log_file = Path(self._logdir.name) / "tritonserver.log"
        triton_config = TritonConfig(
            http_address=config.host,
            http_port=config.http_port,
            grpc_address=config.host,
            grpc_port=config.grpc_port,
            metrics_address=config.host,
            metrics_port=config.metrics_port,
            exit_timeout_secs=config.exit_timeout_s,
            log_file=self.log_file,
            log_verbose=0,
        )
        self.model = SmatModel(self.runtime, config)
        if self.predictor is not None:
            self.sessions = SessionModels(self.predictor, config)
        inputs, outputs = _tensors()
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                self._triton = Triton(config=triton_config)
                self._triton.bind(
                    model_name=config.model_name,
                    infer_func=[self.model] * config.request_slots,
                    inputs=inputs,
                    outputs=outputs,
                    config=ModelConfig(batching=False),
                    strict=True,
                )
                if self.sessions is not None:
                    for kind, (session_inputs, session_outputs) in _session_tensors().items():
                        slots = 1 if kind == "end" else config.session_slots
                        self._triton.bind(
                            model_name=config.session_model(kind),
                            infer_func=[self.sessions.callable(kind)] * slots,
                            inputs=session_inputs,
                            outputs=session_outputs,
                            config=ModelConfig(batching=False),
                            strict=True,
                        )
                self._triton.run()
                return
            except Exception as err:
                self._stop_triton()
                text = str(err)
                race = "Model initialize error" in text and any(marker in text for marker in _HANDSHAKE_RACE)
                if race and attempt < START_ATTEMPTS:
                    # PyTriton gives model instances 1 s to find the first one; a busy machine can miss that.
                    if self.progress is not None:
                        self.progress(f"model instances started too slowly (busy machine); retrying ({attempt})")
                    continue
                self.stop()
                raise SmatError(
                    f"the Triton server did not start: {_summary(err)}; its log: {_log_tail(self.log_file)}"
                ) from None

    def wait(self, stop: threading.Event, poll_s: float = 1.0) -> None:
        """Serve until ``stop`` is set; an unexpected exit of the Triton server is an error."""
        while not stop.wait(poll_s):
            if self._triton is None or not self._triton.is_alive():
                raise SmatError(f"the Triton server stopped unexpectedly; its log: {_log_tail(self.log_file)}")

    def _stop_triton(self) -> None:
        if self._triton is not None:
            with contextlib.suppress(Exception):
                self._triton.stop()
            self._triton = None

    def stop(self) -> None:
        """Stop Triton (in-flight requests get up to ``exit_timeout_s`` to finish), then the batcher. Idempotent.

        Requests still unanswered a few seconds after Triton's own exit timeout are answered with an error,
        so that PyTriton's request threads, which it joins while stopping, always return.
        """
        guard = None
        if self.model is not None:
            guard = threading.Timer(self.config.exit_timeout_s + 5, self.model.batcher.abort)
            guard.daemon = True
            guard.start()
        try:
            self._stop_triton()
        finally:
            if guard is not None:
                guard.cancel()
        if self.model is not None:
            self.model.close()
        if self._logdir is not None:
            self._logdir.cleanup()
            self._logdir = None

    def __enter__(self) -> SmatTritonServer:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
