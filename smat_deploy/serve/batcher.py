"""Dynamic batching of same-size requests in front of one engine.

Requests arrive already validated (contract-shaped float32 arrays). The worker takes the oldest waiting
request, waits at most ``max_delay_s`` from that request's arrival for others of the same height and
width (images of different sizes cannot share a tensor), and runs up to ``max_batch`` images in one
engine call; requests of other sizes wait for the next call, oldest first. With ``max_batch=1`` every
request runs alone, at once.

If a batched call fails, its requests are retried one by one, so a request that breaks the engine only
fails itself.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field

import numpy as np

from smat_deploy.errors import SmatError

RunFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(eq=False)  # compared by identity: the queue removes exactly this request
class _Item:
    image: np.ndarray
    prompt: np.ndarray
    state: np.ndarray
    arrived: float
    future: Future = field(default_factory=Future)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.image.shape[2]), int(self.image.shape[3])

    @property
    def count(self) -> int:
        return int(self.image.shape[0])


@dataclass
class BatchStats:
    requests: int = 0
    images: int = 0
    engine_calls: int = 0
    largest_batch: int = 0
    failed_calls: int = 0

    def as_dict(self) -> dict:
        mean = self.images / self.engine_calls if self.engine_calls else 0.0
        return {**self.__dict__, "mean_batch": round(mean, 2)}


def _settle(future: Future, result: object = None, error: BaseException | None = None) -> None:
    """Answer a request once; a request already answered (aborted at shutdown) keeps its first answer."""
    with contextlib.suppress(InvalidStateError):
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)


class ShapeBatcher:
    """``submit(image [b,3,H,W], prompt [b,1,H,W], state [b,1]) -> Future[alpha [b,1,H,W]]``, batched by size."""

    def __init__(self, run: RunFn, max_batch: int, max_delay_s: float) -> None:
        if max_batch < 1:
            raise SmatError("the batch size must be at least 1")
        if max_delay_s < 0:
            raise SmatError("the queue delay cannot be negative")
        self._run = run
        self.max_batch = max_batch
        self.max_delay_s = max_delay_s
        self.stats = BatchStats()
        self._queue: deque[_Item] = deque()
        self._cv = threading.Condition()
        self._closed = False
        self._running: list[_Item] = []
        self._thread = threading.Thread(target=self._loop, name="smat-batcher", daemon=True)
        self._thread.start()

    def submit(self, image: np.ndarray, prompt: np.ndarray, state: np.ndarray) -> Future:
        item = _Item(image, prompt, state, time.monotonic())
        with self._cv:
            if self._closed:
                raise SmatError("the server is shutting down")
            self._queue.append(item)
            self.stats.requests += 1
            self._cv.notify_all()
        return item.future

    def close(self, timeout: float = 30.0) -> None:
        """Finish what is queued (for at most ``timeout`` seconds), then stop the worker; the rest fail."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout)
        self.abort()

    def abort(self, reason: str = "the server is shutting down") -> None:
        """Answer every waiting and running request with an error now (a running engine call is not interrupted)."""
        with self._cv:
            self._closed = True
            pending = [*self._queue, *self._running]
            self._queue.clear()
            self._cv.notify_all()
        for item in pending:
            _settle(item.future, error=SmatError(reason))

    def _ready_count(self, size: tuple[int, int]) -> int:
        return sum(item.count for item in self._queue if item.size == size)

    def _take(self) -> list[_Item] | None:
        with self._cv:
            while not self._queue:
                if self._closed:
                    return None
                self._cv.wait()
            first = self._queue[0]
            deadline = first.arrived + self.max_delay_s
            while not self._closed and self._ready_count(first.size) < self.max_batch:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cv.wait(remaining)
            group, total = [], 0
            for item in self._queue:
                if item.size == first.size and (not group or total + item.count <= self.max_batch):
                    group.append(item)
                    total += item.count
            for item in group:
                self._queue.remove(item)
            return group

    def _loop(self) -> None:
        while True:
            try:
                group = self._take()
                if group is None:
                    return
                with self._cv:
                    self._running = group
                self._execute(group)
            except Exception as err:  # a bug here must answer the requests, never leave them waiting
                with self._cv:
                    stranded = [*self._running, *self._queue]
                    self._queue.clear()
                for item in stranded:
                    _settle(item.future, error=SmatError(f"internal error in the batcher: {err!r}"))
            finally:
                with self._cv:
                    self._running = []

    def _call(self, group: list[_Item]) -> np.ndarray:
        if len(group) == 1:
            item = group[0]
            return self._run(item.image, item.prompt, item.state)
        return self._run(
            np.concatenate([item.image for item in group]),
            np.concatenate([item.prompt for item in group]),
            np.concatenate([item.state for item in group]),
        )

    def _execute(self, group: list[_Item]) -> None:
        images = sum(item.count for item in group)
        try:
            alpha = self._call(group)
        except Exception as err:  # every request must get an answer
            with self._cv:
                self.stats.engine_calls += 1
                self.stats.failed_calls += 1
            if len(group) > 1:  # find the request that fails; the others still get their alpha
                for item in group:
                    self._execute([item])
                return
            _settle(group[0].future, error=err)
            return
        with self._cv:
            self.stats.engine_calls += 1
            self.stats.images += images
            self.stats.largest_batch = max(self.stats.largest_batch, images)
        start = 0
        for item in group:
            _settle(item.future, result=alpha[start : start + item.count])
            start += item.count
