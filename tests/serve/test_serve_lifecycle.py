"""Starting and stopping ``smat-deploy serve``: taken ports, bad settings, batching seen end to end, clean shutdown,
and the environment PyTriton's bundled server needs."""

from __future__ import annotations

import os
import signal
import socket
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from serve_helpers import REQUEST_TIMEOUT_S, ServerProcess, alive, free_ports, infer, require_pytriton

from smat_deploy.errors import SmatError
from smat_deploy.serve import environment


def test_a_taken_port_is_one_line_error_before_the_engine_loads(run_cli, tiny_onnx):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        http, metrics = free_ports(2)
        result = run_cli(
            "serve", "-e", tiny_onnx, "--host", "127.0.0.1", "--http-port", http, "--grpc-port", taken,
            "--metrics-port", metrics,
        )  # fmt: skip
    assert result.code == 2
    assert (
        result.stderr.strip()
        == f"error: port {taken} is already in use on 127.0.0.1; free it or choose another with --grpc-port"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--http-port", "0"], "--http-port must be 1..65535"),
        (["--http-port", "9000", "--grpc-port", "9000"], "ports must differ"),
        (["--max-batch", "0"], "--max-batch must be at least 1"),
        (["--max-queue-delay-ms", "-1"], "cannot be negative"),
        (["--instances", "0"], "--instances must be at least 1"),
        (["--name", "../x"], "model name"),
        (["--engine", "missing.onnx"], "engine not found"),
        (["--engine", "weights.bin"], "unknown engine type"),
    ],
)
def test_bad_settings_are_one_line_errors(run_cli, args, message):
    ports = free_ports(3)
    defaults = ["--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2])]
    result = run_cli("serve", "--host", "127.0.0.1", *defaults, *args)
    assert result.code == 2, result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_batches_form_and_sigterm_stops_the_server_cleanly(serve_tiny_onnx, tmp_path):
    """Eight same-size requests at once are served in fewer engine calls; SIGTERM then ends everything, exit 0."""
    require_pytriton()
    server = ServerProcess(
        ["--engine", str(serve_tiny_onnx), "--max-batch", "4", "--max-queue-delay-ms", "300", "--instances", "8"],
        tmp_path,
    ).start()
    try:
        children = server.descendants()
        assert len(children) >= 9, "tritonserver and one Python stub per model instance (8)"
        rng = np.random.default_rng(0)
        images = [rng.random((1, 3, 32, 32), dtype=np.float32) for _ in range(8)]
        with ThreadPoolExecutor(8) as pool:
            alphas = list(pool.map(lambda im: infer(server, "grpc", im), images, timeout=REQUEST_TIMEOUT_S))
        for image, alpha in zip(images, alphas, strict=True):
            assert np.array_equal(alpha, image.mean(axis=1, keepdims=True))
    except BaseException:
        server.kill()
        raise
    assert server.stop(signal.SIGTERM) == 0, server.stderr[-2000:]
    summary = server.stdout.strip().splitlines()[-1]
    assert summary.startswith("stopped: 8 requests, 8 images in ")
    calls = int(summary.split(" in ")[1].split()[0])
    largest = int(summary.split("largest ")[1].rstrip(")"))
    assert calls < 8 and 2 <= largest <= 4, summary
    assert not [pid for pid in children if alive(pid)], "tritonserver or a stub outlived the server"
    assert "Traceback" not in server.stderr


def test_ctrl_c_stops_the_server_cleanly(serve_tiny_onnx, tmp_path):
    require_pytriton()
    server = ServerProcess(["--engine", str(serve_tiny_onnx), "--max-batch", "1", "--instances", "1"], tmp_path)
    server.start()
    children = server.descendants()
    image = np.full((1, 3, 16, 16), 0.25, np.float32)
    try:
        assert np.array_equal(infer(server, "http", image), np.full((1, 1, 16, 16), 0.25, np.float32))
    except BaseException:
        server.kill()
        raise
    assert server.stop(signal.SIGINT) == 0, server.stderr[-2000:]
    assert server.stdout.strip().splitlines()[-1].startswith("stopped: 1 requests, 1 images in 1 engine calls")
    assert not any(alive(pid) for pid in children)


# -- the environment --------------------------------------------------------------------------------------------
def test_libpython_is_found_where_the_stub_links_it():
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        with pytest.raises(SmatError, match="no shared libpython"):
            environment.libpython_dir()
        return
    folder = environment.libpython_dir()
    assert (folder / sysconfig.get_config_var("INSTSONAME")).is_file()


def test_prepare_puts_libpython_on_the_library_path_and_points_pytriton_at_a_numpy1_stub(monkeypatch):
    require_pytriton()
    monkeypatch.setenv("LD_LIBRARY_PATH", "/opt/elsewhere")
    prepared = environment.prepare()
    assert os.environ["LD_LIBRARY_PATH"].split(os.pathsep) == [str(prepared.libpython_dir), "/opt/elsewhere"]
    environment.prepare()  # twice: no duplicate entry
    assert os.environ["LD_LIBRARY_PATH"].split(os.pathsep) == [str(prepared.libpython_dir), "/opt/elsewhere"]
    import pytriton.server.triton_server as triton_server

    assert triton_server.get_triton_python_backend_python_env() == prepared.stub_python
    python = prepared.stub_python / "bin" / "python3"
    if environment.needs_stub_environment():
        assert prepared.stub_python != Path(sys.prefix)
        import subprocess

        found = subprocess.run(
            [str(python), "-c", "import numpy, zmq; print(numpy.__version__)"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert int(found.stdout.split(".")[0]) < 2
    else:
        assert prepared.stub_python == Path(sys.exec_prefix)


def test_stub_environment_location(monkeypatch, tmp_path):
    monkeypatch.setenv(environment.STUB_ENV_VARIABLE, str(tmp_path / "stub"))
    assert environment.stub_environment_path() == tmp_path / "stub"
    monkeypatch.delenv(environment.STUB_ENV_VARIABLE)
    expected = Path(sys.prefix) / "triton-stub" if sys.prefix != sys.base_prefix else None
    if expected is not None and os.access(sys.prefix, os.W_OK):
        assert environment.stub_environment_path() == expected


def test_missing_or_wrong_pytriton_is_explained(monkeypatch):
    from importlib import metadata

    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(environment.metadata, "version", missing)
    assert "python -m smat_deploy.serve.environment --install" in environment.pytriton_unavailable_reason()
    monkeypatch.setattr(environment.metadata, "version", lambda name: "0.5.0")
    assert "needs 0.7.0" in environment.pytriton_unavailable_reason()
    with pytest.raises(SmatError, match=r"needs 0\.7\.0"):
        environment.prepare()
