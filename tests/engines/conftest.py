"""Fixtures of the TensorRT API-surface tests (``test_tensorrt_api_surface.py``, ``test_pair_build.py``):
NVIDIA's real bindings, one version per module run, and stand-ins held to them imported as ``tensorrt``."""

from __future__ import annotations

import sys

import pytest
from tensorrt_api import VERSIONS, TensorRTApi, TensorRTStandIns, tensorrt_api


@pytest.fixture(scope="module", params=VERSIONS)
def api(request) -> TensorRTApi:
    """NVIDIA's TensorRT Python API of one bindings version (installed once into pytest's cache)."""
    return tensorrt_api(request.config.cache, request.param)


@pytest.fixture
def trt(api, monkeypatch) -> TensorRTStandIns:
    """Stand-ins for one TensorRT version, imported by ``import tensorrt``."""
    standins = TensorRTStandIns(api)
    monkeypatch.setitem(sys.modules, "tensorrt", standins.module)
    return standins
