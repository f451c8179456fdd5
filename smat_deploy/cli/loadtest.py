"""``smat-deploy loadtest``: throughput and latency percentiles of a Triton server under concurrent clients."""

from __future__ import annotations

from typing import Annotated

import typer

from smat_deploy.cli._output import print_json
from smat_deploy.cli._progress import progress_bars
from smat_deploy.cli._shapes import parse_image_size
from smat_deploy.errors import CheckFailed, SmatError
from smat_deploy.serve.loadtest import LoadConfig, format_report, run_loadtest

EPILOG = """Examples:

  smat-deploy loadtest --url localhost:8000 --concurrency 8 --requests 64

  smat-deploy loadtest --url grpc://localhost:8001 --size 518x518 --requests 32 --timeout-s 60 --json

  smat-deploy loadtest --clicks 10 --requests 16 --concurrency 4 --size 518x518

Compare batching on one machine: start `smat-deploy serve --max-batch 1`, run the same loadtest,
restart with `--max-batch 8`, run it again. Each request is one image (every other one with a box
prompt); warm-up requests are sent first and not counted. Exit status 1 when any request failed.

--clicks N measures interactive sessions (a server started on a folder holding the interactive pair):
each of --requests photos is embedded once (model NAME_embed), gets N clicks with different box
prompts (NAME_click) and is ended (NAME_end); latency and requests/s are reported per kind.
"""


def loadtest_command(
    url: Annotated[str, typer.Option(help="Server HOST:PORT; http:// or grpc:// picks the protocol.")] = (
        "localhost:8000"
    ),
    protocol: Annotated[str | None, typer.Option(help="http or grpc (default: from --url, else http).")] = None,
    model: Annotated[str, typer.Option(help="Model name on the server.")] = "smat",
    concurrency: Annotated[int, typer.Option(help="Clients sending requests at the same time.")] = 8,
    requests: Annotated[int, typer.Option(help="Requests to send in all (counted).")] = 64,
    size: Annotated[str, typer.Option(help="Image size WIDTHxHEIGHT (N for NxN).")] = "224x224",
    warmup: Annotated[int, typer.Option(help="Requests sent first, one at a time, not counted.")] = 2,
    timeout_s: Annotated[
        float, typer.Option("--timeout-s", help="Seconds one request may take before it counts as failed.")
    ] = 300.0,
    clicks: Annotated[
        int,
        typer.Option(
            help="Click mix: each of --requests photos is embedded once, then gets this many clicks (0: whole model)."
        ),
    ] = 0,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Load-test a Triton server serving SMat: throughput and p50/p90/p99 latency."""
    if not timeout_s > 0:  # before LoadConfig, whose own message predates the unit suffix
        raise SmatError(f"--timeout-s must be positive, got {timeout_s}")
    config = LoadConfig(
        url=url,
        protocol=protocol,
        model=model,
        concurrency=concurrency,
        requests=requests,
        size=tuple(parse_image_size(size, "--size")),
        warmup=warmup,
        timeout_s=timeout_s,
        clicks=clicks,
    ).validate()
    with progress_bars("loadtest", "req") as progress:
        report = run_loadtest(config, progress)
    if json_output:
        print_json("loadtest", report.as_dict())
    else:
        typer.echo(format_report(report))
    if report.failed:
        raise CheckFailed(f"{report.failed} of {config.total} requests failed")
