"""The same-size batcher alone (no server): grouping, limits, delay, failure isolation and shutdown."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from smat_deploy.errors import SmatError
from smat_deploy.serve.batcher import ShapeBatcher

TIMEOUT_S = 30


class Engine:
    """Records every call's batch shape; alpha = mean RGB, so results are checkable; can be slowed or made to fail."""

    def __init__(self, delay_s: float = 0.0, fail_when=None) -> None:
        self.calls: list[tuple[int, ...]] = []
        self.delay_s = delay_s
        self.fail_when = fail_when
        self.gate = threading.Event()
        self.gate.set()

    def __call__(self, image, prompt, state):
        self.gate.wait(TIMEOUT_S)
        self.calls.append(image.shape)
        if self.fail_when is not None and self.fail_when(image):
            raise SmatError("engine refused this batch")
        time.sleep(self.delay_s)
        return image.mean(axis=1, keepdims=True) + prompt * state[:, :, None, None]


def request(value: float, height: int, width: int, batch: int = 1):
    image = np.full((batch, 3, height, width), value, np.float32)
    return image, np.zeros((batch, 1, height, width), np.float32), np.zeros((batch, 1), np.float32)


def test_requests_of_one_size_share_calls_and_sizes_never_mix():
    engine = Engine()
    engine.gate.clear()  # hold the engine so that everything queues up
    batcher = ShapeBatcher(engine, max_batch=4, max_delay_s=0.0)
    try:
        sizes = [(20, 30), (31, 17), (20, 30), (20, 30), (31, 17), (20, 30), (20, 30), (20, 30)]
        futures = [batcher.submit(*request(i / 10, *size)) for i, size in enumerate(sizes)]
        engine.gate.set()
        results = [future.result(TIMEOUT_S) for future in futures]
    finally:
        batcher.close()
    for i, (size, alpha) in enumerate(zip(sizes, results, strict=True)):
        assert alpha.shape == (1, 1, *size)
        assert np.allclose(alpha, i / 10)
    assert all(batch <= 4 for batch, *_ in engine.calls)
    assert sum(batch for batch, *_ in engine.calls) == len(sizes)
    assert max(batch for batch, *_ in engine.calls) > 1
    assert batcher.stats.requests == len(sizes) and batcher.stats.images == len(sizes)
    assert batcher.stats.engine_calls == len(engine.calls) < len(sizes)


def test_max_batch_one_runs_every_request_alone_and_multi_image_requests_stay_whole():
    engine = Engine()
    batcher = ShapeBatcher(engine, max_batch=1, max_delay_s=0.05)
    try:
        alpha = batcher.submit(*request(0.5, 16, 16)).result(TIMEOUT_S)
        pair = batcher.submit(*request(0.25, 16, 16, batch=2)).result(TIMEOUT_S)
    finally:
        batcher.close()
    assert alpha.shape == (1, 1, 16, 16) and pair.shape == (2, 1, 16, 16)
    assert [shape[0] for shape in engine.calls] == [1, 2]


def test_the_queue_delay_lets_a_batch_fill_but_bounds_the_wait():
    engine = Engine()
    batcher = ShapeBatcher(engine, max_batch=8, max_delay_s=0.3)
    try:
        start = time.monotonic()
        first = batcher.submit(*request(0.1, 16, 16))
        time.sleep(0.05)
        second = batcher.submit(*request(0.2, 16, 16))
        first.result(TIMEOUT_S), second.result(TIMEOUT_S)
        waited = time.monotonic() - start
    finally:
        batcher.close()
    assert [shape[0] for shape in engine.calls] == [2]  # one call for both
    assert 0.25 <= waited < 5  # the batch did not fill, so it ran when the oldest request's delay was up


def test_a_failing_request_fails_alone():
    engine = Engine(fail_when=lambda image: bool((image[:, 0, 0, 0] > 0.85).any()))
    engine.gate.clear()
    batcher = ShapeBatcher(engine, max_batch=4, max_delay_s=0.0)
    try:
        futures = [batcher.submit(*request(value, 16, 16)) for value in (0.1, 0.9, 0.3, 0.4)]
        engine.gate.set()
        with pytest.raises(SmatError, match="engine refused"):
            futures[1].result(TIMEOUT_S)
        others = [futures[i].result(TIMEOUT_S) for i in (0, 2, 3)]
    finally:
        batcher.close()
    assert [float(alpha.mean()) for alpha in others] == pytest.approx([0.1, 0.3, 0.4])
    assert batcher.stats.failed_calls == 2  # the batch of four, then the bad request alone


def test_close_answers_everything_and_refuses_new_requests():
    engine = Engine(delay_s=0.2)
    batcher = ShapeBatcher(engine, max_batch=1, max_delay_s=0.0)
    futures = [batcher.submit(*request(0.5, 16, 16)) for _ in range(50)]
    batcher.close(timeout=0.5)  # not enough time for 50 calls of 0.2 s
    outcomes = []
    for future in futures:
        try:
            future.result(TIMEOUT_S)
            outcomes.append("alpha")
        except SmatError as err:
            outcomes.append(str(err))
    assert "alpha" in outcomes and "the server is shutting down" in outcomes
    with pytest.raises(SmatError, match="shutting down"):
        batcher.submit(*request(0.5, 16, 16))


def test_bad_settings_are_refused():
    with pytest.raises(SmatError, match="at least 1"):
        ShapeBatcher(Engine(), max_batch=0, max_delay_s=0.0)
    with pytest.raises(SmatError, match="negative"):
        ShapeBatcher(Engine(), max_batch=1, max_delay_s=-1.0)
