"""``smat-deploy loadtest``: concurrent KServe v2 clients against a Triton server; throughput and latency percentiles.

Each of ``concurrency`` threads has its own tritonclient (HTTP or gRPC) and sends requests back to back
until ``requests`` have been sent. The inputs are deterministic: ``distinct`` random images of the chosen
size, every other request with a box prompt (interactive), the rest automatic. Warm-up requests go first,
one at a time, and are not counted. Every request has a client timeout, so the run always ends.

**The click mix** (``clicks`` > 0) measures interactive sessions instead: ``requests`` photos, each
taken by one virtual user who embeds it once (``<model>_embed``), sends ``clicks`` prompts, each a
different box, through the session (``<model>_click``) and ends it (``<model>_end``). Latency and
throughput are reported per kind of request.
"""

from __future__ import annotations

import re
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from smat_deploy.errors import SmatError

PROTOCOLS = ("http", "grpc")
#: The kinds of request in each mix, in report order.
KINDS = {"whole": ("whole",), "clicks": ("embed", "click", "end")}
#: Distinct click prompts per session (cycled when a session has more clicks).
CLICK_PROMPTS = 16


def split_url(url: str, protocol: str | None) -> tuple[str, str]:
    """``("host:port", protocol)`` from ``host:port``, ``http://host:port`` or ``grpc://host:port``."""
    match = re.fullmatch(r"(?:(http|grpc)://)?([^/\s:]+|\[[0-9a-fA-F:]+\]):(\d{1,5})/?", url.strip())
    if not match:
        raise SmatError(f"--url must be HOST:PORT (optionally http:// or grpc://), got {url!r}")
    scheme, host, port = match.groups()
    if protocol is not None and protocol not in PROTOCOLS:
        raise SmatError(f"--protocol must be http or grpc, got {protocol!r}")
    if scheme and protocol and scheme != protocol:
        raise SmatError(f"--url says {scheme} but --protocol says {protocol}")
    return f"{host}:{port}", protocol or scheme or "http"


@dataclass(frozen=True)
class LoadConfig:
    url: str = "localhost:8000"
    protocol: str | None = None
    model: str = "smat"
    concurrency: int = 8
    requests: int = 64
    size: tuple[int, int] = (224, 224)
    warmup: int = 2
    timeout_s: float = 300.0
    distinct: int = 4
    seed: int = 0
    clicks: int = 0

    @property
    def mix(self) -> str:
        """``whole`` (every request to the whole model) or ``clicks`` (sessions: embed once, click many)."""
        return "clicks" if self.clicks else "whole"

    @property
    def total(self) -> int:
        """Requests sent in the timed part: with clicks, each photo is one embed, its clicks and one end."""
        return self.requests * (self.clicks + 2) if self.clicks else self.requests

    def validate(self) -> LoadConfig:
        if self.concurrency < 1:
            raise SmatError("--concurrency must be at least 1")
        if self.clicks < 0:
            raise SmatError(f"--clicks cannot be negative, got {self.clicks}")
        if self.requests < 1:
            raise SmatError("--requests must be at least 1")
        if self.warmup < 0:
            raise SmatError("--warmup cannot be negative")
        if self.timeout_s <= 0:
            raise SmatError("--timeout-s must be positive")
        split_url(self.url, self.protocol)
        return self


def _latency(latencies_ms: list[float]) -> dict:
    if not latencies_ms:
        return dict.fromkeys(("p50", "p90", "p99", "mean", "max"))
    return {
        "p50": float(np.percentile(latencies_ms, 50)),
        "p90": float(np.percentile(latencies_ms, 90)),
        "p99": float(np.percentile(latencies_ms, 99)),
        "mean": statistics.fmean(latencies_ms),
        "max": max(latencies_ms),
    }


@dataclass
class KindCounts:
    """One kind of request's outcome: how many were answered, how many failed, and the answered ones' latency."""

    ok: int = 0
    failed: int = 0
    latencies_ms: list[float] = field(default_factory=list)


@dataclass
class LoadReport:
    config: LoadConfig
    address: str
    protocol: str
    ok: int = 0
    failed: int = 0
    wall_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    kinds: dict[str, KindCounts] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind in KINDS[self.config.mix]:
            self.kinds.setdefault(kind, KindCounts())

    def record(self, kind: str, elapsed_ms: float | None, error: BaseException | None = None) -> None:
        """One request's outcome (not thread-safe: the caller holds the report's lock)."""
        counts = self.kinds[kind]
        if error is None:
            self.ok += 1
            counts.ok += 1
            self.latencies_ms.append(elapsed_ms)
            counts.latencies_ms.append(elapsed_ms)
            return
        self.failed += 1
        counts.failed += 1
        reason = _first_line(error)
        self.errors[reason] = self.errors.get(reason, 0) + 1

    def percentile(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        return float(np.percentile(self.latencies_ms, q))

    def _rps(self, ok: int) -> float | None:
        return round(ok / self.wall_s, 3) if self.wall_s > 0 else None

    def as_dict(self) -> dict:
        width, height = self.config.size
        data = {
            "url": self.address,
            "protocol": self.protocol,
            "model": self.config.model,
            "size": f"{width}x{height}",
            "concurrency": self.config.concurrency,
            "requests": self.config.requests,
            "mix": self.config.mix,
            "ok": self.ok,
            "failed": self.failed,
            "wall_s": round(self.wall_s, 6),
            "throughput_rps": self._rps(self.ok),
            "latency_ms": _latency(self.latencies_ms),
            "errors": self.errors,
        }
        if self.config.clicks:
            data["clicks_per_session"] = self.config.clicks
            data["requests_sent"] = self.config.total
        data["kinds"] = {
            kind: {
                "model": _model_of(self.config, kind),
                "ok": counts.ok,
                "failed": counts.failed,
                "throughput_rps": self._rps(counts.ok),
                "latency_ms": _latency(counts.latencies_ms),
            }
            for kind, counts in self.kinds.items()
        }
        return data


def _model_of(config: LoadConfig, kind: str) -> str:
    return config.model if kind == "whole" else f"{config.model}_{kind}"


def _inputs(config: LoadConfig) -> list[tuple[np.ndarray, np.ndarray | None]]:
    width, height = config.size
    rng = np.random.default_rng(config.seed)
    cases = []
    for index in range(max(1, config.distinct)):
        image = rng.random((1, 3, height, width), dtype=np.float32)
        prompt = None
        if index % 2:
            prompt = np.zeros((1, 1, height, width), np.float32)
            prompt[:, :, height // 4 : 3 * height // 4, width // 4 : 3 * width // 4] = 1.0
        cases.append((image, prompt))
    return cases


def _click_prompts(config: LoadConfig) -> list[np.ndarray]:
    """Different box prompts for the clicks of one session (deterministic; cycled when there are more clicks)."""
    width, height = config.size
    rng = np.random.default_rng(config.seed + 1)
    prompts = []
    for _ in range(min(config.clicks, CLICK_PROMPTS)):
        box_h, box_w = max(1, height // 4), max(1, width // 4)
        top, left = int(rng.integers(0, height - box_h + 1)), int(rng.integers(0, width - box_w + 1))
        prompt = np.zeros((1, 1, height, width), np.float32)
        prompt[:, :, top : top + box_h, left : left + box_w] = 1.0
        prompts.append(prompt)
    return prompts


class _Client:
    """One connection of one protocol: ``ready()``, ``metadata()``, ``infer(image, prompt)``."""

    def __init__(self, address: str, protocol: str, model: str, timeout_s: float) -> None:
        self.protocol = protocol
        self.model = model
        self.timeout_s = timeout_s
        if protocol == "http":
            import tritonclient.http as module

            self.client = module.InferenceServerClient(address, connection_timeout=timeout_s, network_timeout=timeout_s)
        else:
            import tritonclient.grpc as module

            self.client = module.InferenceServerClient(address)
        self.module = module

    def ready(self) -> bool:
        if self.protocol == "grpc":
            return self.client.is_server_ready(client_timeout=self.timeout_s)
        return self.client.is_server_ready()

    def metadata(self, model: str | None = None) -> dict:
        model = model or self.model
        if self.protocol == "grpc":
            return self.client.get_model_metadata(model, as_json=True, client_timeout=self.timeout_s)
        return self.client.get_model_metadata(model)

    def _input(self, name: str, array: np.ndarray, datatype: str = "FP32"):
        item = self.module.InferInput(name, list(array.shape), datatype)
        item.set_data_from_numpy(array)
        return item

    def _infer(self, model: str, inputs: list):
        if self.protocol == "grpc":
            return self.client.infer(model, inputs, client_timeout=self.timeout_s)
        return self.client.infer(model, inputs)

    def infer(self, image: np.ndarray, prompt: np.ndarray | None) -> np.ndarray:
        inputs = [
            self._input(name, array) for name, array in (("image", image), ("prompt", prompt)) if array is not None
        ]
        return self._infer(self.model, inputs).as_numpy("alpha")

    def embed(self, image: np.ndarray) -> np.ndarray:
        """A new session for ``image [1,3,H,W]``: its id, as the server sent it (``BYTES [1]``)."""
        return self._infer(f"{self.model}_embed", [self._input("image", image)]).as_numpy("session_id")

    def click(self, session_id: np.ndarray, prompt: np.ndarray) -> np.ndarray:
        inputs = [self._input("session_id", session_id.astype(object), "BYTES"), self._input("prompt", prompt)]
        return self._infer(f"{self.model}_click", inputs).as_numpy("alpha")

    def end(self, session_id: np.ndarray) -> bool:
        inputs = [self._input("session_id", session_id.astype(object), "BYTES")]
        return bool(self._infer(f"{self.model}_end", inputs).as_numpy("ended")[0])

    def close(self) -> None:
        self.client.close()


def _first_line(err: BaseException) -> str:
    """The reason of a failed request: a server-side ``SomethingError: ...`` line if there is one, else line one."""
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    causes = [line for line in lines if re.match(r"^[\w.]*(Error|Exception|BadRequest): ", line)]
    reason = causes[-1] if causes and len(lines) > 1 else lines[0]
    return reason[:200]


def run_loadtest(config: LoadConfig, progress: Callable[[int], Callable[[], None]] | None = None) -> LoadReport:
    """Check the server and the model, warm up, then run ``requests`` requests over ``concurrency`` clients.

    ``progress(total)`` is called once the timed part starts and returns a callback run after each request.
    """
    config = config.validate()
    address, protocol = split_url(config.url, config.protocol)
    probe = _Client(address, protocol, config.model, min(config.timeout_s, 30.0))
    try:
        try:
            ready = probe.ready()
        except Exception as err:
            raise SmatError(f"no Triton server answers at {address} ({protocol}): {_first_line(err)}") from None
        if not ready:
            raise SmatError(f"the Triton server at {address} is not ready")
        try:
            metadata = probe.metadata()
        except Exception as err:
            raise SmatError(f"model {config.model!r} at {address}: {_first_line(err)}") from None
        names = {tensor["name"] for tensor in metadata.get("inputs", [])}
        if "image" not in names:
            raise SmatError(f"model {config.model!r} has no 'image' input (inputs: {', '.join(sorted(names))})")
        if config.clicks:
            for kind in ("embed", "click", "end"):
                try:
                    probe.metadata(_model_of(config, kind))
                except Exception as err:
                    raise SmatError(
                        f"model {_model_of(config, kind)!r} at {address}: {_first_line(err)} (--clicks needs a "
                        "server with sessions: smat-deploy serve --engine FOLDER holding the interactive pair)"
                    ) from None
        cases = _inputs(config)
        prompts = _click_prompts(config)
        for index in range(config.warmup):
            try:
                image, prompt = cases[index % len(cases)]
                if config.clicks:
                    session_id = probe.embed(image)
                    probe.click(session_id, prompts[index % len(prompts)])
                    probe.end(session_id)
                else:
                    probe.infer(image, prompt)
            except Exception as err:
                raise SmatError(f"the warm-up request failed: {_first_line(err)}") from None
    finally:
        probe.close()

    report = LoadReport(config, address, protocol)
    tick = progress(config.total) if progress is not None else None
    lock = threading.Lock()
    next_index = iter(range(config.requests))

    def timed(kind: str, send: Callable[[], object]) -> object | None:
        """Send one request; record its latency or its error; its result, or None when it failed."""
        start = time.perf_counter()
        try:
            result = send()
        except Exception as err:
            with lock:
                report.record(kind, None, err)
            result = None
        else:
            elapsed = (time.perf_counter() - start) * 1000.0
            with lock:
                report.record(kind, elapsed)
        if tick is not None:
            tick()
        return result

    def session(client: _Client, image: np.ndarray) -> None:
        """One virtual user: embed the photo, click ``clicks`` times, end the session."""
        session_id = timed("embed", lambda: client.embed(image))
        if session_id is None:  # the clicks and the end cannot be sent: each counts as failed
            with lock:
                for kind, count in (("click", config.clicks), ("end", 1)):
                    for _ in range(count):
                        report.record(kind, None, SmatError("not sent: the photo's embed request failed"))
            if tick is not None:
                for _ in range(config.clicks + 1):
                    tick()
            return
        for click in range(config.clicks):
            timed("click", lambda click=click: client.click(session_id, prompts[click % len(prompts)]))
        timed("end", lambda: client.end(session_id))

    def worker() -> None:
        client = _Client(address, protocol, config.model, config.timeout_s)
        try:
            while True:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    return
                image, prompt = cases[index % len(cases)]
                if config.clicks:
                    session(client, image)
                else:
                    timed("whole", lambda image=image, prompt=prompt: client.infer(image, prompt))
        finally:
            client.close()

    threads = [threading.Thread(target=worker, name=f"loadtest-{i}") for i in range(config.concurrency)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    report.wall_s = time.perf_counter() - start
    return report


def _timing(ok: int, failed: int, rps: float | None, latency: dict) -> dict:
    return {
        "ok": ok,
        "failed": failed,
        "req/s": "-" if rps is None else f"{rps:.2f}",
        **{
            f"{key} ms": "-" if latency[key] is None else f"{latency[key]:.1f}"
            for key in ("p50", "p90", "p99", "mean", "max")
        },
    }


def format_report(report: LoadReport) -> str:
    """The whole mix: one row. The click mix: the run, then one row per kind of request and one for all."""
    from smat_deploy._table import format_table

    data = report.as_dict()
    latency = data["latency_ms"]
    if not report.config.clicks:
        row = {
            "url": data["url"],
            "protocol": data["protocol"],
            "size": data["size"],
            "concurrency": data["concurrency"],
            "requests": data["requests"],
            "ok": data["ok"],
            "failed": data["failed"],
            "wall s": f"{data['wall_s']:.2f}",
            "req/s": "-" if data["throughput_rps"] is None else f"{data['throughput_rps']:.2f}",
            **{
                f"{key} ms": "-" if latency[key] is None else f"{latency[key]:.1f}"
                for key in ("p50", "p90", "p99", "mean", "max")
            },
        }
        lines = [format_table([row])]
    else:
        lines = [
            f"click mix: {data['url']} ({data['protocol']}), {data['size']}, {data['concurrency']} users, "
            f"{data['requests']} photos x (1 embed + {data['clicks_per_session']} clicks + 1 end) = "
            f"{data['requests_sent']} requests in {data['wall_s']:.2f} s",
        ]
        rows = [
            {
                "kind": kind,
                "model": item["model"],
                **_timing(item["ok"], item["failed"], item["throughput_rps"], item["latency_ms"]),
            }
            for kind, item in data["kinds"].items()
        ]
        rows.append(
            {"kind": "all", "model": "-", **_timing(data["ok"], data["failed"], data["throughput_rps"], latency)}
        )
        lines.append(format_table(rows))
    lines += [f"error ({count}x): {reason}" for reason, count in report.errors.items()]
    return "\n".join(lines)
