"""The server's size policy without starting Triton: one budget for the whole model and the sessions, requests
too large refused in one line, requests of any accepted size answered at their size."""

from __future__ import annotations

import numpy as np
import pytest
from tiny_pair import make_tiny_pair

from smat_deploy.errors import SmatError
from smat_deploy.runtime import Predictor, Runtime
from smat_deploy.runtime.memory import resident_mb
from smat_deploy.runtime.sizing import SizePolicy
from smat_deploy.serve.lifecycle import apply_size_policy, size_lines
from smat_deploy.serve.server import BadRequest, ServeConfig, SessionModels, SmatModel


@pytest.fixture
def engines(tmp_path, tiny_onnx):
    make_tiny_pair(tmp_path / "pair")
    return Runtime.open(tiny_onnx, device="cpu"), Predictor.open(tmp_path / "pair", device="cpu")


def test_the_whole_model_and_the_sessions_share_one_budget_with_the_session_cache_set_aside(engines):
    runtime, predictor = engines
    config = ServeConfig(size_policy=SizePolicy(max_memory_mb=4_000, max_side=256), session_memory_mb=1_000)
    apply_size_policy(runtime, predictor, config)
    assert runtime.sizing is not None and predictor.sizing is not None
    assert runtime.sizing.gate is predictor.sizing.gate
    assert runtime.sizing.budget is predictor.sizing.budget
    budget = runtime.sizing.budget
    assert budget.total_mb == 4_000 and budget.reserved_mb == 1_000
    assert budget.call_mb == pytest.approx(4_000 - budget.resident_mb - 1_000)
    lines = size_lines(runtime)
    assert "up to 8192 px a side" in lines[0] and "every photo at most 256 px a side (--max-side)" in lines[0]
    assert "memory budget 4,000 MB (--max-memory-mb 4000" in lines[1]


def test_a_budget_that_leaves_nothing_for_requests_is_refused_at_start(engines):
    runtime, predictor = engines
    config = ServeConfig(size_policy=SizePolicy(max_memory_mb=10), session_memory_mb=1_000)
    with pytest.raises(SmatError, match="leaves nothing for requests"):
        apply_size_policy(runtime, predictor, config)


def test_requests_too_large_for_the_budget_are_refused_and_the_next_one_is_served(engines):
    runtime, _ = engines
    budget = resident_mb() + 500  # 500 MB for requests, whatever this test process already holds
    config = ServeConfig(size_policy=SizePolicy(max_memory_mb=budget, max_side=128), max_batch=8, max_delay_ms=0)
    apply_size_policy(runtime, None, config)
    model = SmatModel(runtime, config)
    try:
        call_mb = runtime.sizing.budget.call_mb
        big = np.zeros((8, 3, 2000, 2000), np.float32)  # 640 MB as it arrives, whatever the engine then needs
        with pytest.raises(BadRequest) as caught:
            model([{"image": big}])
        assert f"more than the {call_mb:,.0f} MB this server gives one request" in str(caught.value)
        image = np.random.default_rng(0).random((1, 3, 300, 200), dtype=np.float32)
        alpha = model([{"image": image}])[0]["alpha"]
        assert alpha.shape == (1, 1, 300, 200)
        np.testing.assert_array_equal(alpha, runtime(image))  # the same rule as the runtime in-process
    finally:
        model.close()


def test_sessions_embed_large_photos_by_the_same_rule(engines):
    runtime, predictor = engines
    config = ServeConfig(size_policy=SizePolicy(max_side=64, upsampling="nearest"))
    apply_size_policy(runtime, predictor, config)
    sessions = SessionModels(predictor, config)
    image = np.random.default_rng(1).random((1, 3, 120, 160), dtype=np.float32)
    answer = sessions.embed({"image": image})
    assert (int(answer["height"][0]), int(answer["width"][0])) == (120, 160)
    prompt = np.zeros((1, 1, 120, 160), np.float32)
    prompt[..., 20:100, 40:120] = 1
    alpha = sessions.click({"session_id": answer["session_id"], "prompt": prompt})["alpha"]
    assert alpha.shape == (1, 1, 120, 160)
    np.testing.assert_array_equal(alpha, prompt)  # the tiny decoder answers prompt * state; the box survives
