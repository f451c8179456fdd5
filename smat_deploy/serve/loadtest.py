"""``smat-deploy loadtest``: concurrent KServe v2 clients against a Triton server; throughput and latency percentiles.

Each of ``concurrency`` threads has its own tritonclient (HTTP or gRPC) and sends requests back to back
until ``requests`` have been sent. The inputs are deterministic: ``distinct`` random images of the chosen
size, every other request with a box prompt (interactive), the rest automatic. Warm-up requests go first,
one at a time, and are not counted. Every request has a client timeout, so the run always ends.
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

    def validate(self) -> LoadConfig:
        if self.concurrency < 1:
            raise SmatError("--concurrency must be at least 1")
        if self.requests < 1:
            raise SmatError("--requests must be at least 1")
        if self.warmup < 0:
            raise SmatError("--warmup cannot be negative")
        if self.timeout_s <= 0:
            raise SmatError("--timeout-s must be positive")
        split_url(self.url, self.protocol)
        return self


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

    def percentile(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        return float(np.percentile(self.latencies_ms, q))

    def as_dict(self) -> dict:
        width, height = self.config.size
        return {
            "url": self.address,
            "protocol": self.protocol,
            "model": self.config.model,
            "size": f"{width}x{height}",
            "concurrency": self.config.concurrency,
            "requests": self.config.requests,
            "ok": self.ok,
            "failed": self.failed,
            "wall_s": round(self.wall_s, 3),
            "throughput_rps": round(self.ok / self.wall_s, 3) if self.wall_s > 0 else None,
            "latency_ms": {
                "p50": self.percentile(50),
                "p90": self.percentile(90),
                "p99": self.percentile(99),
                "mean": statistics.fmean(self.latencies_ms) if self.latencies_ms else None,
                "max": max(self.latencies_ms) if self.latencies_ms else None,
            },
            "errors": self.errors,
        }


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

    def metadata(self) -> dict:
        if self.protocol == "grpc":
            return self.client.get_model_metadata(self.model, as_json=True, client_timeout=self.timeout_s)
        return self.client.get_model_metadata(self.model)

    def infer(self, image: np.ndarray, prompt: np.ndarray | None) -> np.ndarray:
        inputs = []
        for name, array in (("image", image), ("prompt", prompt)):
            if array is not None:
                item = self.module.InferInput(name, list(array.shape), "FP32")
                item.set_data_from_numpy(array)
                inputs.append(item)
        if self.protocol == "grpc":
            result = self.client.infer(self.model, inputs, client_timeout=self.timeout_s)
        else:
            result = self.client.infer(self.model, inputs)
        return result.as_numpy("alpha")

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
        cases = _inputs(config)
        for index in range(config.warmup):
            try:
                probe.infer(*cases[index % len(cases)])
            except Exception as err:
                raise SmatError(f"the warm-up request failed: {_first_line(err)}") from None
    finally:
        probe.close()

    report = LoadReport(config, address, protocol)
    tick = progress(config.requests) if progress is not None else None
    lock = threading.Lock()
    next_index = iter(range(config.requests))

    def worker() -> None:
        client = _Client(address, protocol, config.model, config.timeout_s)
        try:
            while True:
                with lock:
                    index = next(next_index, None)
                if index is None:
                    return
                image, prompt = cases[index % len(cases)]
                start = time.perf_counter()
                try:
                    client.infer(image, prompt)
                    elapsed = (time.perf_counter() - start) * 1000.0
                    with lock:
                        report.ok += 1
                        report.latencies_ms.append(elapsed)
                except Exception as err:
                    with lock:
                        report.failed += 1
                        reason = _first_line(err)
                        report.errors[reason] = report.errors.get(reason, 0) + 1
                if tick is not None:
                    tick()
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


def format_report(report: LoadReport) -> str:
    from smat_deploy._table import format_table

    data = report.as_dict()
    latency = data["latency_ms"]
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
    lines += [f"error ({count}x): {reason}" for reason, count in report.errors.items()]
    return "\n".join(lines)
