"""``smat-deploy serve``: a real Triton Inference Server (through NVIDIA PyTriton) hosting any smat-deploy engine."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path
from typing import Annotated

import typer

from smat_deploy.cli._options import CheckpointOption, DeviceOption, EngineOption, SeedOption, open_engine
from smat_deploy.cli.app import app
from smat_deploy.errors import SmatError
from smat_deploy.serve.server import ServeConfig, SmatTritonServer

SERVE_EPILOG = """Examples:

  smat-deploy serve --engine export/smat.onnx

  smat-deploy serve --engine export/smat.onnx --http-port 9000 --grpc-port 9001 --metrics-port 9002 --max-batch 4

  smat-deploy serve --engine torch -c smat.pth --host 127.0.0.1

Clients use the KServe v2 protocol (tritonclient in Python, C++, Java, Go, or plain HTTP/JSON):
model 'smat' (--name), inputs image FP32 [b,3,H,W] in [0,1], prompt FP32 [b,1,H,W] (optional),
state FP32 [b,1] (optional); output alpha FP32 [b,1,H,W]. Requests of the same size are batched
(up to --max-batch images per engine call, waiting at most --max-queue-delay-ms); a malformed
request gets its own error and no other request is affected. Ctrl+C or SIGTERM stops the server
cleanly (in-flight requests finish first). The first start prepares a small numpy<2 environment
for Triton's Python stub (pip, about 30 s) when this Python has numpy 2.
"""


@app.command("serve", epilog=SERVE_EPILOG)
def serve_command(
    engine: EngineOption = None,
    checkpoint: CheckpointOption = None,
    device: DeviceOption = "auto",
    seed: SeedOption = 0,
    threads: Annotated[int | None, typer.Option(help="Intra-op threads of the engine (default: one per core).")] = None,
    name: Annotated[str, typer.Option("--name", help="Model name clients address.")] = "smat",
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "0.0.0.0",
    http_port: Annotated[int, typer.Option("--http-port", "--port", help="KServe v2 HTTP/REST port.")] = 8000,
    grpc_port: Annotated[int, typer.Option("--grpc-port", help="KServe v2 gRPC port.")] = 8001,
    metrics_port: Annotated[int, typer.Option("--metrics-port", help="Prometheus metrics port.")] = 8002,
    max_batch: Annotated[
        int, typer.Option("--max-batch", help="Most images per engine call (1: no batching); also per request.")
    ] = 8,
    max_queue_delay_ms: Annotated[
        float, typer.Option("--max-queue-delay-ms", help="Longest a request waits for others of its size.")
    ] = 5.0,
    instances: Annotated[
        int | None,
        typer.Option(help="Requests Triton hands over at once (model instances); default 2 x --max-batch."),
    ] = None,
    max_side: Annotated[int, typer.Option("--max-side", help="Largest image side accepted, in pixels.")] = 4096,
    request_timeout: Annotated[
        float, typer.Option("--request-timeout", help="Seconds a request may wait for its alpha inside the server.")
    ] = 600.0,
    triton_log: Annotated[
        Path | None, typer.Option("--triton-log", help="Write Triton's own log here (default: a temporary file).")
    ] = None,
) -> None:
    """Serve SMat from Triton Inference Server (HTTP + gRPC, KServe v2), batching same-size requests."""
    config = ServeConfig(
        model_name=name,
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        max_batch=max_batch,
        max_delay_ms=max_queue_delay_ms,
        instances=instances,
        max_side=max_side,
        request_timeout_s=request_timeout,
        log_file=triton_log,
    ).validate()
    if threads is not None and threads < 1:
        raise SmatError("--threads must be at least 1")
    config.check_ports()  # before the engine loads: a taken port fails at once
    runtime = open_engine(engine, checkpoint, seed, device, threads)
    stop = threading.Event()
    server = SmatTritonServer(runtime, config, progress=lambda text: typer.echo(text, err=True))

    def on_signal(*_: object) -> None:
        if stop.is_set():  # a second Ctrl+C / SIGTERM while stopping: leave now (Triton gets SIGTERM with us)
            typer.echo("error: stopped without waiting for in-flight requests", err=True)
            os._exit(130)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        server.start()
        info = runtime.info
        urls = server.urls
        typer.echo(f"serving model '{name}': {info.backend} {info.precision} on {info.device} ({info.engine})")
        typer.echo(f"  HTTP     {urls['http']}  (POST /v2/models/{name}/infer, GET /v2/health/ready)")
        typer.echo(f"  gRPC     {urls['grpc']}")
        typer.echo(f"  metrics  {urls['metrics']}")
        typer.echo(
            f"  batching up to {max_batch} same-size images per engine call, queue delay {max_queue_delay_ms:g} ms, "
            f"{config.request_slots} requests at once"
        )
        typer.echo(f"  Triton log {server.log_file}")
        typer.echo("ready (Ctrl+C or SIGTERM stops)")
        sys.stdout.flush()
        server.wait(stop)
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    stats = server.model.batcher.stats.as_dict() if server.model is not None else {}
    typer.echo(
        f"stopped: {stats.get('requests', 0)} requests, {stats.get('images', 0)} images in "
        f"{stats.get('engine_calls', 0)} engine calls (mean batch {stats.get('mean_batch', 0)}, "
        f"largest {stats.get('largest_batch', 0)})"
    )
