"""Fixtures for the serving tests: the tiny contract model and one real Triton server serving it."""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_helpers import TINY_MAX_BATCH, TINY_MAX_SIDE, ServerProcess, require_pytriton


@pytest.fixture(scope="session")
def serve_tiny_onnx(tmp_path_factory, tiny_onnx_factory) -> Path:
    """The tiny contract model (``max(mean RGB, prompt * state)``) that most server tests serve."""
    return tiny_onnx_factory(tmp_path_factory.mktemp("serve-model") / "tiny.onnx", precision="float32")


@pytest.fixture(scope="session")
def tiny_server(serve_tiny_onnx, tmp_path_factory):
    """One real Triton server serving the tiny model for the session's protocol tests."""
    require_pytriton()
    server = ServerProcess(
        [
            "--engine",
            str(serve_tiny_onnx),
            "--max-batch",
            str(TINY_MAX_BATCH),
            "--max-queue-delay-ms",
            "20",
            "--instances",
            "8",
            "--max-side",
            str(TINY_MAX_SIDE),
        ],
        tmp_path_factory.mktemp("tiny-server"),
    )
    server.start()
    yield server
    code = server.stop()
    assert code == 0, server.stderr[-2000:]
