"""``smat-deploy serve``: a real Triton Inference Server (through NVIDIA PyTriton) hosting any smat-deploy engine."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from smat_deploy.cli._options import (
    BackendOption,
    BackendOptionsOption,
    CheckpointOption,
    DeviceOption,
    EngineOption,
    MaxMemoryOption,
    MaxSideOption,
    ScaleToOption,
    SeedOption,
    ThreadsOption,
    UpsamplingOption,
    backend_options_with_threads,
    engine_args,
    engine_target,
    size_policy,
)
from smat_deploy.runtime.sizing import DEFAULT_SCALE_TO
from smat_deploy.serve.lifecycle import (
    TORCH_ENGINE,
    apply_size_policy,
    check_same_weights,
    plan_sessions,
    ready_lines,
    serve_until_stopped,
    whole_model,
)
from smat_deploy.serve.server import ServeConfig, SmatTritonServer

EPILOG = """Examples:

  smat-deploy serve --engine export/smat.onnx

  smat-deploy serve --engine export/smat.onnx --http-port 9000 --grpc-port 9001 --metrics-port 9002 --max-batch 4

  smat-deploy serve --engine torch -c smat.pth --host 127.0.0.1

  smat-deploy serve --engine export/smat.onnx --backend openvino --backend-option hint=throughput

  smat-deploy serve --engine export/ --session-count 16 --session-memory 512

Clients use the KServe v2 protocol (tritonclient in Python, C++, Java, Go, or plain HTTP/JSON):
model 'smat' (--name), inputs image FP32 [b,3,H,W] in [0,1], prompt FP32 [b,1,H,W] (optional),
state FP32 [b,1] (optional); output alpha FP32 [b,1,H,W]. Requests of the same size are batched
(up to --max-batch images per engine call, waiting at most --max-queue-delay-ms); a malformed
request gets its own error and no other request is affected. Ctrl+C or SIGTERM stops the server
cleanly (in-flight requests finish first).

Photos of any size, as in `smat-deploy matte`: sides up to 8192 px are accepted; a photo runs at full
size when it fits the memory budget (--max-memory-mb, default 60% of the memory available once the
engines are loaded, the session cache set aside), else scaled down (at most --scale-to px) with its
alpha brought back to the request's size by guided upsampling; the server prints the bound it works
to. A request too large for the budget is refused in one line; concurrent requests wait for memory
rather than overrun the budget.

Sessions: given a folder from `smat-deploy export --interactive` (its smat.onnx is the model 'smat'),
the server also hosts 'smat_embed' (image [1,3,H,W] -> session_id BYTES [1], height, width),
'smat_click' (session_id, prompt [1,1,H,W] and state [1,1], both optional -> alpha [1,1,H,W]) and
'smat_end' (session_id -> ended): a photo is sent once, then every click carries only the session id
and the prompt. At most --session-count sessions and --session-memory MB of embeddings are kept; the
least recently used go first, and an unknown or expired session id gets an error. The pair runs on the
whole model's --backend with its --backend-option values (--backend openvino serves both on OpenVINO).

The first start prepares a small numpy<2 environment for Triton's Python stub (pip, about 30 s)
when this Python has numpy 2.
"""


def serve_command(
    engine: EngineOption = None,
    backend: BackendOption = None,
    backend_option: BackendOptionsOption = None,
    checkpoint: CheckpointOption = None,
    device: DeviceOption = "auto",
    seed: SeedOption = 0,
    threads: ThreadsOption = None,
    name: Annotated[str, typer.Option("--name", help="Model name clients address.")] = "smat",
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "0.0.0.0",
    http_port: Annotated[int, typer.Option("--http-port", help="KServe v2 HTTP/REST port.")] = 8000,
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
    max_memory_mb: MaxMemoryOption = None,
    max_side: MaxSideOption = None,
    scale_to: ScaleToOption = DEFAULT_SCALE_TO,
    upsampling: UpsamplingOption = "guided",
    request_timeout_s: Annotated[
        float, typer.Option("--request-timeout-s", help="Seconds a request may wait for its alpha inside the server.")
    ] = 600.0,
    triton_log: Annotated[
        Path | None, typer.Option("--triton-log", help="Write Triton's own log here (default: a temporary file).")
    ] = None,
    sessions: Annotated[
        bool | None,
        typer.Option(
            "--sessions/--no-sessions",
            help="Serve interactive sessions (embed once, click many) from the interactive pair; "
            "default: on when --engine is a folder holding the pair.",
        ),
    ] = None,
    session_count: Annotated[int, typer.Option("--session-count", help="Most sessions kept at once.")] = 32,
    session_memory: Annotated[
        float, typer.Option("--session-memory", help="Most memory the sessions' embeddings take, in MB.")
    ] = 1024.0,
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
        size_policy=size_policy(max_memory_mb, max_side, scale_to, upsampling),
        request_timeout_s=request_timeout_s,
        log_file=triton_log,
        session_count=session_count,
        session_memory_mb=session_memory,
    ).validate()
    config.check_ports()  # before the engine loads: a taken port fails at once
    target = engine_target(engine, checkpoint)
    torch_weights = engine in (None, TORCH_ENGINE)
    plan = plan_sessions(target, sessions, torch_weights=torch_weights)
    whole = engine if engine is None else whole_model(engine)
    engines = engine_args(whole, checkpoint, seed, device, threads, backend, backend_option)
    runtime = engines.runtime()
    predictor = None
    if plan.enabled:  # the pair on the whole model's backend, with its options
        if torch_weights:
            predictor = engines.predictor()
        else:
            from smat_deploy.runtime.predictor import Predictor

            options = backend_options_with_threads(threads, backend_option)
            predictor = Predictor.open(plan.source, runtime.backend.name, device, precision=plan.precision, **options)
        check_same_weights(whole, predictor.info["weights_sha256"])
    apply_size_policy(runtime, predictor, config)

    def announce(server: SmatTritonServer) -> None:
        for line in ready_lines(server):
            typer.echo(line)
        sys.stdout.flush()

    summary = serve_until_stopped(
        runtime,
        config,
        on_ready=announce,
        log=lambda message: typer.echo(message, err=True),
        predictor=predictor,
        sessions_reason=plan.reason,
    )
    for line in summary.lines():
        typer.echo(line)
