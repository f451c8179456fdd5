"""``smat-deploy loadtest`` against the real Triton server: counts, percentiles, and errors that end the run."""

from __future__ import annotations

import json

import pytest
from serve_helpers import free_ports

from smat_deploy.contract import MAX_SIDE
from smat_deploy.errors import SmatError
from smat_deploy.serve.loadtest import split_url


@pytest.mark.parametrize("scheme", ["", "http://", "grpc://"])
def test_loadtest_reports_throughput_and_percentiles(run_cli, tiny_server, scheme):
    url = tiny_server.grpc_url if scheme == "grpc://" else tiny_server.http_url
    result = run_cli(
        "loadtest", "--url", f"{scheme}{url}", "--concurrency", "8", "--requests", "24", "--size", "64x48", "--json"
    )
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["protocol"] == ("grpc" if scheme == "grpc://" else "http")
    assert (report["ok"], report["failed"], report["concurrency"], report["size"]) == (24, 0, 8, "64x48")
    latency = report["latency_ms"]
    assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
    assert report["throughput_rps"] == pytest.approx(24 / report["wall_s"], rel=1e-2)


def test_loadtest_table(run_cli, tiny_server):
    result = run_cli("loadtest", "--url", tiny_server.http_url, "--concurrency", "2", "--requests", "4")
    assert result.code == 0, result.stderr
    header = result.stdout.splitlines()[0].split()
    for column in ("req/s", "p50", "p90", "p99"):
        assert column in header


def test_failed_requests_are_counted_and_fail_the_run(run_cli, tiny_server):
    # A side above the contract's bound (8192): every request is refused by the server.
    size = f"{MAX_SIDE + 1}x14"
    result = run_cli("loadtest", "--url", tiny_server.http_url, "--requests", "3", "--warmup", "0", "--size", size)
    assert result.code == 1
    assert "3 of 3 requests failed" in result.stderr
    assert "error (3x)" in result.stdout and f"sides up to {MAX_SIDE}" in result.stdout


def test_unreachable_server_and_unknown_model_are_one_line_errors(run_cli, tiny_server):
    (port,) = free_ports(1)
    result = run_cli("loadtest", "--url", f"127.0.0.1:{port}", "--requests", "2", "--timeout-s", "5")
    assert result.code == 2 and result.stderr.startswith("error: no Triton server answers at")
    assert len(result.stderr.strip().splitlines()) == 1
    result = run_cli("loadtest", "--url", tiny_server.http_url, "--model", "nope", "--requests", "1")
    assert result.code == 2 and "model 'nope'" in result.stderr


def test_option_parsing():  # --size: tests/cli/test_shapes.py
    assert split_url("grpc://localhost:8001", None) == ("localhost:8001", "grpc")
    assert split_url("localhost:8000", "grpc") == ("localhost:8000", "grpc")
    for url, protocol, message in (("localhost", None, "HOST:PORT"), ("http://h:1", "grpc", "says http")):
        with pytest.raises(SmatError, match=message):
            split_url(url, protocol)


def test_photos_above_the_servers_cap_are_served_by_the_size_policy(run_cli, tiny_server):
    # 600x400 is above the tiny server's --max-side (256): each request runs scaled and comes back at 600x400.
    result = run_cli("loadtest", "--url", tiny_server.http_url, "--requests", "4", "--warmup", "0", "--size", "600x400")
    assert result.code == 0, result.stdout + result.stderr
    assert "600x400" in result.stdout
