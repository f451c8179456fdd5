"""The real SMat (PyTorch reference, built-in weights) served by Triton to concurrent clients.

With ``--max-batch 1`` every request runs alone and the served alpha is bitwise the in-process
runtime's. With batching on, images of one size share an engine call; a batched call may differ from
single-image calls in the last bits of float32 (as any batched inference does), so that case is checked
against a 5e-6 bound and the measured difference is printed.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from serve_helpers import REQUEST_TIMEOUT_S, ServerProcess, infer, require_pytriton

from smat_deploy.runtime import Runtime

pytestmark = pytest.mark.heavy

SIZES = [(56, 70), (70, 56), (42, 42), (28, 45), (56, 70), (42, 42)]


def _cases(count: int) -> list[tuple[np.ndarray, np.ndarray | None, np.ndarray | None, str]]:
    rng = np.random.default_rng(7)
    cases = []
    for i in range(count):
        height, width = SIZES[i % len(SIZES)]
        image = rng.random((1, 3, height, width), dtype=np.float32)
        if i % 3 == 0:
            prompt, state = None, None  # automatic
        else:
            prompt = np.zeros((1, 1, height, width), np.float32)
            prompt[:, :, height // 4 : height // 2, width // 4 : 3 * width // 4] = 1.0
            state = None if i % 3 == 1 else np.ones((1, 1), np.float32)
        cases.append((image, prompt, state, "http" if i % 2 else "grpc"))
    return cases


def _serve_concurrently(server: ServerProcess, cases) -> list[np.ndarray]:
    with ThreadPoolExecutor(8) as pool:
        return list(
            pool.map(lambda case: infer(server, case[3], *case[:3]), cases, timeout=REQUEST_TIMEOUT_S * len(cases))
        )


@pytest.fixture(scope="module")
def reference():
    return Runtime.open("torch", device="cpu")


def _server(tmp_path_factory, *args: str) -> ServerProcess:
    require_pytriton()
    folder = tmp_path_factory.mktemp("smat-server")
    return ServerProcess(["--engine", "torch", "--device", "cpu", *args], folder).start()


def test_unbatched_serving_is_bitwise_the_in_process_runtime(tmp_path_factory, reference):
    server = _server(tmp_path_factory, "--max-batch", "1", "--instances", "8")
    try:
        cases = _cases(12)
        alphas = _serve_concurrently(server, cases)
    finally:
        assert server.stop() == 0, server.stderr[-2000:]
    for (image, prompt, state, _), alpha in zip(cases, alphas, strict=True):
        expected = reference(image, prompt, state)
        assert expected.std() > 0.01  # a real matte, not a constant
        assert np.array_equal(alpha, expected)


def test_batched_serving_matches_the_in_process_runtime(tmp_path_factory, reference):
    server = _server(tmp_path_factory, "--max-batch", "4", "--max-queue-delay-ms", "200", "--instances", "8")
    try:
        cases = _cases(12)
        alphas = _serve_concurrently(server, cases)
    finally:
        assert server.stop() == 0, server.stderr[-2000:]
    summary = server.stdout.strip().splitlines()[-1]
    largest = int(summary.split("largest ")[1].rstrip(")"))
    assert largest >= 2, f"no batch formed: {summary}"
    worst = max(
        float(np.abs(alpha - reference(image, prompt, state)).max())
        for (image, prompt, state, _), alpha in zip(cases, alphas, strict=True)
    )
    print(f"batched serving vs in-process runtime: max |alpha diff| {worst:.2e} ({summary})")
    assert worst <= 5e-6
