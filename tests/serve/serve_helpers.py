"""Helpers for the serving tests: a real ``smat-deploy serve`` (Triton through PyTriton) in a subprocess on free
loopback ports, and official KServe v2 clients (tritonclient).

Everything is bounded: the server must be ready within ``START_TIMEOUT_S``, every request has a client
timeout, and stopping waits at most ``STOP_TIMEOUT_S`` before the process is killed (and the test fails).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from smat_deploy.serve.environment import pytriton_unavailable_reason

REPO = Path(__file__).resolve().parents[2]

START_TIMEOUT_S = 300
STOP_TIMEOUT_S = 90
REQUEST_TIMEOUT_S = 120


def free_ports(count: int) -> list[int]:
    """Ports the kernel says are free now (bound to port 0 and released)."""
    sockets = []
    try:
        for _ in range(count):
            probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            probe.bind(("127.0.0.1", 0))
            sockets.append(probe)
        return [probe.getsockname()[1] for probe in sockets]
    finally:
        for probe in sockets:
            probe.close()


def require_pytriton() -> None:
    if (reason := pytriton_unavailable_reason()) is not None:
        pytest.skip(reason)


@dataclass
class ServerProcess:
    """``python -m smat_deploy serve ...`` on 127.0.0.1 with its own HTTP, gRPC and metrics ports."""

    args: list[str]
    folder: Path
    ports: list[int] = field(default_factory=lambda: free_ports(3))
    process: subprocess.Popen | None = None

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.ports[0]}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.ports[1]}"

    @property
    def stdout(self) -> str:
        return (self.folder / "stdout.txt").read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return (self.folder / "stderr.txt").read_text(errors="replace")

    def start(self) -> ServerProcess:
        http, grpc, metrics = self.ports
        command = [
            sys.executable,
            "-m",
            "smat_deploy",
            "serve",
            *self.args,
            "--host",
            "127.0.0.1",
            "--http-port",
            str(http),
            "--grpc-port",
            str(grpc),
            "--metrics-port",
            str(metrics),
            "--triton-log",
            str(self.folder / "tritonserver.log"),
        ]
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.folder / "stdout.txt", "wb") as out, open(self.folder / "stderr.txt", "wb") as err:
            self.process = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=err)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited with {self.process.returncode}: {self.stderr[-2000:]}")
            if "ready (" in self.stdout:
                return self
            time.sleep(0.5)
        self.kill()
        raise AssertionError(f"serve was not ready within {START_TIMEOUT_S} s: {self.stderr[-2000:]}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        """Signal the server and wait for it; a server that does not stop in time is killed and fails the test."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                return self.process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill()
                raise AssertionError(f"serve did not stop within {STOP_TIMEOUT_S} s after {sig!r}") from None
        return self.process.returncode

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def descendants(self) -> list[int]:
        """PIDs of every process under the server: tritonserver and the Python stubs it starts."""
        assert self.process is not None
        found, frontier = [], [self.process.pid]
        while frontier:
            pid = frontier.pop()
            try:
                children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            except OSError:
                continue
            found += [int(child) for child in children]
            frontier += [int(child) for child in children]
        return found


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it has exited.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state != "Z"


# -- clients ----------------------------------------------------------------------------------------
def infer_inputs(module, image: np.ndarray, prompt: np.ndarray | None = None, state: np.ndarray | None = None):
    """KServe inputs for ``tritonclient.http`` or ``tritonclient.grpc`` (dtype from the array)."""
    from tritonclient.utils import np_to_triton_dtype

    inputs = []
    for name, array in (("image", image), ("prompt", prompt), ("state", state)):
        if array is None:
            continue
        item = module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
        item.set_data_from_numpy(array)
        inputs.append(item)
    return inputs


def http_client(server: ServerProcess):
    import tritonclient.http as httpclient

    return httpclient.InferenceServerClient(
        server.http_url, connection_timeout=REQUEST_TIMEOUT_S, network_timeout=REQUEST_TIMEOUT_S
    )


def grpc_client(server: ServerProcess):
    import tritonclient.grpc as grpcclient

    return grpcclient.InferenceServerClient(server.grpc_url)


def infer(server: ServerProcess, protocol: str, image, prompt=None, state=None, model: str = "smat") -> np.ndarray:
    """One request over ``protocol`` ("http" or "grpc") with a fresh client; returns alpha."""
    if protocol == "http":
        import tritonclient.http as module

        client = http_client(server)
        try:
            return client.infer(model, infer_inputs(module, image, prompt, state)).as_numpy("alpha")
        finally:
            client.close()
    import tritonclient.grpc as module

    client = grpc_client(server)
    try:
        result = client.infer(model, infer_inputs(module, image, prompt, state), client_timeout=REQUEST_TIMEOUT_S)
        return result.as_numpy("alpha")
    finally:
        client.close()


#: The tiny server's settings: small limits so that the limits themselves can be tested.
TINY_MAX_BATCH = 4
TINY_MAX_SIDE = 256


# -- sessions ---------------------------------------------------------------------------------------
def call(server: ServerProcess, protocol: str, model: str, inputs: dict[str, np.ndarray], outputs: list[str]):
    """One request to any model over ``protocol`` with a fresh client; ``inputs`` by name (object arrays are BYTES).

    Returns the named outputs as numpy arrays, in order.
    """
    from tritonclient.utils import np_to_triton_dtype

    if protocol == "http":
        import tritonclient.http as module

        client = http_client(server)
    else:
        import tritonclient.grpc as module

        client = grpc_client(server)
    try:
        items = []
        for name, array in inputs.items():
            datatype = "BYTES" if array.dtype == object else np_to_triton_dtype(array.dtype)
            item = module.InferInput(name, list(array.shape), datatype)
            item.set_data_from_numpy(array)
            items.append(item)
        if protocol == "http":
            result = client.infer(model, items)
        else:
            result = client.infer(model, items, client_timeout=REQUEST_TIMEOUT_S)
        return [result.as_numpy(name) for name in outputs]
    finally:
        client.close()


def embed(server: ServerProcess, protocol: str, image: np.ndarray, model: str = "smat") -> np.ndarray:
    """A new session for ``image [1,3,H,W]``: its id as a BYTES tensor ``[1]`` (an object array), ready to send."""
    (session_id,) = call(server, protocol, f"{model}_embed", {"image": image}, ["session_id"])
    return session_id.astype(object)


def click(server: ServerProcess, protocol: str, session_id, prompt=None, state=None, model: str = "smat"):
    """Alpha for ``prompt`` (and ``state``) on the session's photo."""
    inputs = {"session_id": np.asarray(session_id, dtype=object)}
    inputs |= {name: array for name, array in (("prompt", prompt), ("state", state)) if array is not None}
    return call(server, protocol, f"{model}_click", inputs, ["alpha"])[0]
