"""The size policy: which size a photo runs at within a memory budget, how a batch is split, how concurrent calls
share the budget, and how the alpha comes back. A fake estimator (memory = pixels of the run) gives exact
expectations; the tiny contract model runs the real path."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from smat_deploy import images
from smat_deploy.errors import SmatError
from smat_deploy.runtime import Runtime
from smat_deploy.runtime import memory as memory_module
from smat_deploy.runtime.memory import MemoryEstimate
from smat_deploy.runtime.sizing import (
    DEFAULT_MEMORY_SHARE,
    Budget,
    MemoryGate,
    Rescale,
    SizePolicy,
    Sizing,
    host_memory_mb,
    is_allocation_failure,
    resolve_budget,
    run_at,
    shrink_prompt,
)
from smat_deploy.upsample import GuidedUpsampler, resize_nearest


def pixel_estimate(batch: int, height: int, width: int) -> MemoryEstimate:
    """A fake engine whose call takes 1 MB per 1000 pixels of its input."""
    total = batch * height * width / 1000
    return MemoryEstimate(total, total, 0.0, total, 0.0, "fake", "whole")


def sizing(call_mb: float, policy: SizePolicy | None = None, **limits) -> Sizing:
    budget = Budget(total_mb=call_mb + 100, call_mb=call_mb, device="cpu", source="test")
    return Sizing(policy or SizePolicy(), budget, pixel_estimate, **limits)


def predicted(plan) -> float:
    return plan.engine.total_mb + host_memory_mb(plan.batch, plan.height, plan.width, plan.run_height, plan.run_width)


def test_a_photo_that_fits_runs_at_full_size():
    plan = sizing(10_000).plan(1, 1500, 2000)
    assert (plan.run_height, plan.run_width) == (1500, 2000) and not plan.scaled and plan.reason == "full size"
    assert plan.predicted_mb == pytest.approx(predicted(plan))


def test_a_photo_too_large_is_scaled_to_the_largest_size_that_fits_never_above_the_quality_cap():
    # 4000x3000 takes 12,000 MB at full size. With 3,000 MB it must be scaled: not to the cap (1568 fits),
    # and with 1,500 MB to the largest side that fits.
    plan = sizing(3_000).plan(1, 3000, 4000)
    assert (plan.run_width, plan.run_height) == (1568, 1176) and plan.reason == "scaled to fit the budget"
    tight = sizing(1_500)
    plan = tight.plan(1, 3000, 4000)
    assert plan.scaled and predicted(plan) <= 1_500
    bigger = images.scaled_size(3000, 4000, plan.run_width + 1)
    assert tight._predicted(1, 3000, 4000, *bigger) > 1_500  # one pixel more would not fit


def test_max_side_caps_every_photo_and_the_engines_limits_cap_it_too():
    plan = sizing(100_000, SizePolicy(max_side=1000)).plan(1, 3000, 4000)
    assert (plan.run_width, plan.run_height) == (1000, 750) and plan.reason == "scaled to --max-side 1000"
    assert not sizing(100_000, SizePolicy(max_side=1000)).plan(1, 600, 800).scaled
    limited = sizing(100_000, max_height=512, max_width=1024).plan(1, 3000, 4000)
    assert (
        limited.run_height <= 512
        and limited.run_width <= 1024
        and limited.reason == "scaled to the engine's size limits"
    )
    # An explicit cap above the quality cap is honoured when it fits, and replaced by the cap when it does not.
    assert sizing(100_000, SizePolicy(max_side=2000)).plan(1, 3000, 4000).run_width == 2000
    assert sizing(3_000, SizePolicy(max_side=2000)).plan(1, 3000, 4000).run_width == 1568


def test_a_budget_too_small_for_the_smallest_size_is_refused_in_one_line():
    with pytest.raises(SmatError) as caught:
        sizing(100).plan(1, 3000, 4000)  # the photo's own arrays alone need 240 MB
    message = str(caught.value)
    assert "a 4000x3000 photo needs at least" in message and "raise --max-memory-mb" in message
    assert "\n" not in message


def test_a_batch_is_planned_per_image_and_run_in_chunks_that_fit():
    fitting = sizing(2_200)
    plan = fitting.plan(8, 1000, 1000)
    assert not plan.scaled and plan.batch == 8
    assert fitting.chunk(plan) == 2  # 1,000 MB of engine and 20 MB of host arrays per image
    calls = []

    def run(image, prompt, state):
        calls.append(image.shape[0])
        return image.mean(axis=1, keepdims=True)

    image = np.random.default_rng(0).random((8, 3, 1000, 1000), dtype=np.float32)
    alpha = fitting.run(run, plan, image, np.zeros((8, 1, 1000, 1000), np.float32), np.zeros((8, 1), np.float32))
    assert calls == [2, 2, 2, 2]
    np.testing.assert_array_equal(alpha, image.mean(axis=1, keepdims=True))
    assert sizing(2_200, max_batch=1).chunk(plan) == 1


def test_concurrent_calls_wait_for_memory_rather_than_overrun_the_budget():
    gate = MemoryGate(100)
    using, peak, lock = [0.0], [0.0], threading.Lock()

    def call(megabytes: float) -> None:
        with gate.reserve(megabytes):
            with lock:
                using[0] += megabytes
                peak[0] = max(peak[0], using[0])
            time.sleep(0.02)
            with lock:
                using[0] -= megabytes

    threads = [threading.Thread(target=call, args=(mb,)) for mb in (60, 60, 30, 30, 90, 10) * 3]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert peak[0] <= 100 and using[0] == 0
    with gate.reserve(500):  # more than the whole budget: runs alone rather than never
        pass


def test_a_scaled_run_shrinks_the_photo_and_prompt_and_brings_the_alpha_back():
    rng = np.random.default_rng(3)
    image = rng.random((2, 3, 120, 160), dtype=np.float32)
    prompt = np.zeros((2, 1, 120, 160), np.float32)
    prompt[0, 0, 30:90, 40:120] = 1
    state = np.array([[1.0], [0.0]], np.float32)
    seen = {}

    def run(small_image, small_prompt, small_state):
        seen.update(image=small_image, prompt=small_prompt, state=small_state)
        return small_image.mean(axis=1, keepdims=True)

    for method in ("guided", "bilinear", "nearest"):
        plan = sizing(100_000, SizePolicy(max_side=80, upsampling=method)).plan(2, 120, 160)
        alpha = run_at(run, plan, image, prompt, state)
        assert alpha.shape == (2, 1, 120, 160) and seen["image"].shape == (2, 3, 60, 80)
        assert np.array_equal(seen["state"], state)
        photo = image[1].transpose(1, 2, 0)
        small = images.resize_image(photo, (60, 80))
        np.testing.assert_allclose(seen["image"][1], small.transpose(2, 0, 1), atol=1e-6)
        np.testing.assert_array_equal(seen["prompt"][0, 0], resize_nearest(prompt[0, 0], (60, 80)))
        expected = {
            "guided": lambda s, p: GuidedUpsampler(s, p)(s.mean(-1)),
            "nearest": lambda s, p: resize_nearest(s.mean(-1), (120, 160)),
        }
        if method in expected:
            np.testing.assert_allclose(alpha[1, 0], expected[method](small, photo), atol=1e-6)


def test_a_thin_prompt_that_nearest_would_lose_keeps_every_cell_it_touches():
    line = np.zeros((100, 100), np.float32)
    line[:, 51] = 1  # one pixel wide: nearest sampling at 1/4 picks columns 0, 4, 8, ... and misses it
    assert not resize_nearest(line, (25, 25)).any()
    small = shrink_prompt(line, (25, 25))
    assert small[:, 12].all() and small.sum() == 25
    wide = np.zeros((100, 100), np.float32)
    wide[20:60, 20:60] = 1
    np.testing.assert_array_equal(shrink_prompt(wide, (25, 25)), resize_nearest(wide, (25, 25)))


def test_a_rescale_holds_the_guides_once_and_answers_each_alpha():
    image = np.random.default_rng(5).random((1, 3, 90, 120), dtype=np.float32)
    plan = sizing(100_000, SizePolicy(max_side=60)).plan(1, 90, 120)
    rescale = Rescale(plan, image)
    assert rescale.image.shape == (1, 3, 45, 60) and rescale.nbytes > image.nbytes
    for value in (0.0, 0.5, 1.0):
        back = rescale.alpha(np.full((1, 1, 45, 60), value, np.float32))
        assert back.shape == (1, 1, 90, 120)
        np.testing.assert_allclose(back, value, atol=1e-4)


def test_policy_options_are_checked_in_one_line():
    for fields, message in (
        ({"max_memory_mb": 0}, "--max-memory-mb must be a positive number of MB"),
        ({"scale_to": 10}, "--scale-to must be at least 14"),
        ({"max_side": 5}, "--max-side must be at least 14"),
        ({"upsampling": "cubic"}, "--upsampling must be one of guided, bilinear, nearest"),
    ):
        with pytest.raises(SmatError, match=message):
            SizePolicy(**fields)


def test_the_default_budget_is_a_share_of_what_is_available_plus_what_is_held(monkeypatch):
    monkeypatch.setattr("smat_deploy.runtime.sizing.available_memory_mb", lambda: 20_000.0)
    monkeypatch.setattr("smat_deploy.runtime.sizing.resident_mb", lambda: 500.0)
    budget = resolve_budget(SizePolicy(), "cpu", reserved_mb=1_000)
    assert budget.total_mb == pytest.approx(500 + DEFAULT_MEMORY_SHARE * 20_000)
    assert budget.call_mb == pytest.approx(DEFAULT_MEMORY_SHARE * 20_000 - 1_000)
    assert budget.resident_mb == pytest.approx(500)
    assert "60% of the 20,000 MB available + 500 MB resident" in budget.source
    given = resolve_budget(SizePolicy(max_memory_mb=8_000), "cpu")
    assert given.total_mb == 8_000 and given.call_mb == pytest.approx(7_500) and given.source == "--max-memory-mb 8000"


def test_a_containers_memory_limit_bounds_what_is_available(tmp_path):
    v2 = tmp_path / "v2"
    v2.mkdir()
    (v2 / "memory.max").write_text("4000000000\n")
    (v2 / "memory.current").write_text("1000000000\n")
    assert memory_module._cgroup_room(v2) == pytest.approx(3e9)
    (v2 / "memory.max").write_text("max\n")
    assert memory_module._cgroup_room(v2) is None
    assert memory_module._cgroup_room(tmp_path / "none") is None
    assert memory_module.available_memory_mb() > 0


def test_allocation_failures_are_recognised_by_what_runtimes_say():
    onnxruntime = RuntimeError(
        "[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running MatMul node. "
        "Name:'node_MatMul_1' Status Message: Failed to allocate memory for requested buffer of size 90747433984"
    )
    for error in (onnxruntime, MemoryError(), RuntimeError("std::bad_alloc"), RuntimeError("CUDA out of memory.")):
        assert is_allocation_failure(error)
    assert not is_allocation_failure(RuntimeError("shape mismatch"))


def test_the_runtime_reports_an_allocation_failure_as_what_it_is(tiny_onnx, monkeypatch):
    runtime = Runtime.open(tiny_onnx, device="cpu")

    def fail(*_args):
        raise RuntimeError("Failed to allocate memory for requested buffer of size 90747433984")

    monkeypatch.setattr(runtime.backend, "run", fail)
    with pytest.raises(SmatError) as caught:
        runtime(np.zeros((300, 400, 3), np.float32))
    message = str(caught.value)
    assert message.startswith("the engine ran out of memory at 400x300 (batch 1; predicted")
    assert "lower --max-side or --max-memory-mb" in message and "\n" not in message


def test_the_tiny_model_through_a_policy_gives_an_alpha_at_the_photos_size(tiny_onnx, tiny_expected_alpha):
    runtime = Runtime.open(tiny_onnx, device="cpu", size_policy=SizePolicy(max_side=64, upsampling="nearest"))
    assert Runtime.open(tiny_onnx, device="cpu").plan(1, 10, 10) is None  # no policy: nothing planned
    photo = np.random.default_rng(1).random((96, 128, 3), dtype=np.float32)
    alpha, report = runtime.call(photo)
    assert alpha.shape == (96, 128) and report.plan is not None and report.plan.scaled
    assert set(report.stages) == {"scale", "engine", "upsample"}
    small = images.resize_image(photo, (48, 64))
    expected = tiny_expected_alpha(small.transpose(2, 0, 1)[None], np.zeros((1, 1, 48, 64)), np.zeros((1, 1)))
    np.testing.assert_allclose(alpha, resize_nearest(expected[0, 0], (96, 128)), atol=1e-6)
    small_photo = photo[:40, :50]
    np.testing.assert_array_equal(runtime(small_photo), Runtime.open(tiny_onnx, device="cpu")(small_photo))


def test_torch_tensors_in_give_tensors_out_whether_the_photo_is_scaled_or_not(tiny_onnx):
    import torch

    runtime = Runtime.open(tiny_onnx, device="cpu", size_policy=SizePolicy(max_side=64))
    plain = Runtime.open(tiny_onnx, device="cpu")
    scaled = runtime(torch.rand(2, 3, 96, 128, generator=torch.Generator().manual_seed(0)))
    assert isinstance(scaled, torch.Tensor) and scaled.shape == (2, 1, 96, 128)
    small = torch.rand(1, 3, 40, 50, generator=torch.Generator().manual_seed(1))
    alpha = runtime(small)
    assert isinstance(alpha, torch.Tensor)
    assert torch.equal(alpha, plain(small))


def test_on_a_gpu_the_default_budget_is_a_share_of_its_free_memory(monkeypatch):
    import sys
    import types

    from smat_deploy.runtime import devices

    fake_cuda = types.SimpleNamespace(is_available=lambda: True, mem_get_info=lambda index: (30e9, 80e9))
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=fake_cuda))
    assert devices.cuda_free_memory_mb(0) == pytest.approx(30_000)
    budget = resolve_budget(SizePolicy(), "cuda:0")
    assert budget.total_mb == pytest.approx(0.8 * 30_000) and budget.call_mb == budget.total_mb
    assert budget.source == "80% of the 30,000 MB free on cuda:0"
    assert resolve_budget(SizePolicy(max_memory_mb=5_000), "cuda:1").call_mb == 5_000


def test_without_torch_or_nvml_a_gpu_budget_must_be_given(monkeypatch):
    import ctypes
    import sys

    from smat_deploy.runtime import devices

    monkeypatch.delitem(sys.modules, "torch", raising=False)

    def no_library(name, *args, **kwargs):
        raise OSError(f"{name}: cannot open shared object file")

    monkeypatch.setattr(ctypes, "CDLL", no_library)
    with pytest.raises(SmatError, match=r"cannot read the free memory of cuda:0 .*pass --max-memory-mb"):
        devices.cuda_free_memory_mb(0)
