"""Photos of any size: the size an engine runs a photo at, within a memory budget, and the alpha brought back.

One rule for every entry point (``matte``, ``Runtime``, ``Predictor``, ``app``, ``serve``):

1. A **budget** (:class:`SizePolicy` ``max_memory_mb``; by default :data:`DEFAULT_MEMORY_SHARE` of the memory
   available when the engine opens, plus what the process already holds; on a GPU
   :data:`DEVICE_MEMORY_SHARE` of its free memory) bounds one call's peak. The peak is predicted before the
   call from the contract's sizes (:mod:`smat_deploy.runtime.memory`): the engine's working memory plus the
   call's own arrays on the host.
2. A photo whose **full size fits** the budget runs at full size, exactly as without a policy.
3. A larger one is **scaled down** (aspect kept) to the largest size that fits, and never above
   ``scale_to`` (the quality cap: the long side at which the upsampled alpha stays close to a full-size run,
   chosen from the measurements in docs/photo-sizes.md). ``max_side``, when given, caps every photo (for
   speed), and an engine with fixed size limits (a TensorRT profile) caps it too.
4. The alpha comes back at the photo's **full size** by guided upsampling from the full-size photo
   (:mod:`smat_deploy.upsample`), or by ``bilinear`` / ``nearest`` when asked.
5. A batch larger than the budget allows at once runs in chunks; concurrent calls on one engine reserve
   their predicted memory from one :class:`MemoryGate` and wait for each other rather than overrun it.

A budget too small for even the smallest size is refused in one line, and an allocation failure inside a
backend is reported as :class:`OutOfMemory` (one line: the size, the prediction, the options to change).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from smat_deploy.contract import MAX_SIDE, MIN_SIDE
from smat_deploy.errors import SmatError
from smat_deploy.images import resize_image, scaled_size
from smat_deploy.runtime.memory import MB, MemoryEstimate, available_memory_mb, resident_mb
from smat_deploy.upsample import UPSAMPLING_METHODS, GuidedUpsampler, resize_nearest, upsample_alpha

#: Long side a photo too large for the budget is scaled to, at most (the quality cap).
DEFAULT_SCALE_TO = 1568
#: Share of the available memory (``MemAvailable``, within the cgroup's limit) a call may take by default.
DEFAULT_MEMORY_SHARE = 0.6
#: Share of a GPU's free memory the engine's working memory may take by default.
DEVICE_MEMORY_SHARE = 0.8
#: Host bytes per photo pixel a call holds: the float32 image, prompt and alpha in the contract's layout.
_HOST_BYTES_PER_PIXEL = (3 + 1 + 1) * 4
#: Host bytes per pixel of the scaled photo: its image, prompt and alpha, plus the guided filter's statistics
#: (about a dozen float64 maps, and their temporaries while they are computed).
_SCALED_BYTES_PER_PIXEL = (3 + 1 + 1) * 4 + 24 * 8
#: The guided filter's strips of the full-size photo (``upsample._STRIP_PIXELS``), with their temporaries.
_STRIP_MB = 150.0

Estimator = Callable[[int, int, int], MemoryEstimate]
RunFn = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class SizePolicy:
    """How large photos are handled (see the module's text). Every field has a command-line option of the same name.

    - ``max_memory_mb``: the budget (the process's peak resident memory on the CPU, the engine's device
      memory on a GPU); None: the default share of what is available when the engine opens;
    - ``scale_to``: long side, in pixels, of a photo scaled to fit the budget, at most;
    - ``max_side``: long side every photo is scaled to, at most (None: only the budget scales);
    - ``upsampling``: ``guided`` (default), ``bilinear`` or ``nearest`` (the official demo's).
    """

    max_memory_mb: float | None = None
    scale_to: int = DEFAULT_SCALE_TO
    max_side: int | None = None
    upsampling: str = "guided"

    def __post_init__(self) -> None:
        if self.max_memory_mb is not None and not self.max_memory_mb > 0:
            raise SmatError(f"--max-memory-mb must be a positive number of MB, got {self.max_memory_mb:g}")
        if self.scale_to < MIN_SIDE:
            raise SmatError(f"--scale-to must be at least {MIN_SIDE}, got {self.scale_to}")
        if self.max_side is not None and self.max_side < MIN_SIDE:
            raise SmatError(f"--max-side must be at least {MIN_SIDE}, got {self.max_side}")
        if self.upsampling not in UPSAMPLING_METHODS:
            raise SmatError(f"--upsampling must be one of {', '.join(UPSAMPLING_METHODS)}, got {self.upsampling!r}")


@dataclass(frozen=True)
class Budget:
    """The memory one call may use, resolved when an engine opens.

    ``total_mb`` is the budget itself; ``call_mb`` what a call may add to what the process held at that
    moment (``total_mb`` minus the resident memory then, minus ``reserved_mb`` kept for other uses, such
    as a server's cached embeddings). ``device`` says where it applies; ``source`` how it was set.
    """

    total_mb: float
    call_mb: float
    device: str
    source: str
    reserved_mb: float = 0.0

    @property
    def resident_mb(self) -> float:
        """What the process (or, on a GPU, the device) held when the budget was set."""
        return self.total_mb - self.call_mb - self.reserved_mb

    def as_dict(self) -> dict:
        return {
            "total_mb": round(self.total_mb),
            "call_mb": round(self.call_mb),
            "resident_mb": round(self.resident_mb),
            "reserved_mb": round(self.reserved_mb),
            "device": self.device,
            "source": self.source,
        }


def resolve_budget(policy: SizePolicy, device: str = "cpu", reserved_mb: float = 0.0) -> Budget:
    """The budget ``policy`` asks for on ``device`` (``cpu`` or ``cuda:N``), measured now."""
    if device.startswith("cuda"):
        from smat_deploy.runtime.devices import cuda_free_memory_mb

        index = int(device.partition(":")[2] or 0)
        if policy.max_memory_mb is not None:
            total, source = policy.max_memory_mb, f"--max-memory-mb {policy.max_memory_mb:g}"
        else:
            free = cuda_free_memory_mb(index)
            total = DEVICE_MEMORY_SHARE * free
            source = f"{DEVICE_MEMORY_SHARE:.0%} of the {free:,.0f} MB free on {device}"
        return Budget(total, total - reserved_mb, device, source, reserved_mb)  # the device's use is in its free memory
    resident = resident_mb()
    if policy.max_memory_mb is not None:
        total, source = policy.max_memory_mb, f"--max-memory-mb {policy.max_memory_mb:g}"
    else:
        available = available_memory_mb()
        total = resident + DEFAULT_MEMORY_SHARE * available
        source = f"{DEFAULT_MEMORY_SHARE:.0%} of the {available:,.0f} MB available + {resident:,.0f} MB resident"
    return Budget(total, total - resident - reserved_mb, "cpu", source, reserved_mb)


@dataclass(frozen=True)
class SizePlan:
    """How one call runs: the photo's size, the size the engine runs at, and the memory it is predicted to take."""

    batch: int
    height: int
    width: int
    run_height: int
    run_width: int
    engine: MemoryEstimate
    host_mb: float
    budget: Budget
    reason: str
    upsampling: str

    @property
    def scaled(self) -> bool:
        return (self.run_height, self.run_width) != (self.height, self.width)

    @property
    def predicted_mb(self) -> float:
        """What the call adds to the process (the engine's and the host's working memory, on the CPU)."""
        return self.engine.total_mb + (0.0 if self.budget.device.startswith("cuda") else self.host_mb)

    @property
    def predicted_peak_mb(self) -> float:
        """The predicted peak of the process (on a GPU, of the device): what it held at open plus the call."""
        return self.budget.resident_mb + self.predicted_mb

    def describe(self) -> str:
        """One line: ``4000x3000 -> 1568x1176 (scaled to fit the budget), predicted 5,210 MB of 13,900 MB``."""
        size = f"{self.width}x{self.height}"
        run = f" -> {self.run_width}x{self.run_height}, {self.upsampling} upsampling" if self.scaled else ""
        return (
            f"{size}{run} ({self.reason}); predicted {self.predicted_mb:,.0f} MB of the "
            f"{self.budget.call_mb:,.0f} MB a call may take"
        )

    def as_dict(self) -> dict:
        return {
            "size": [self.width, self.height],
            "run_size": [self.run_width, self.run_height],
            "batch": self.batch,
            "scaled": self.scaled,
            "reason": self.reason,
            "upsampling": self.upsampling if self.scaled else None,
            "predicted_mb": round(self.predicted_mb, 1),
            "predicted_peak_mb": round(self.predicted_peak_mb, 1),
            "engine_mb": round(self.engine.total_mb, 1),
            "host_mb": round(self.host_mb, 1),
            "memory": self.engine.as_dict(),
            "budget": self.budget.as_dict(),
        }


def host_memory_mb(batch: int, height: int, width: int, run_height: int, run_width: int) -> float:
    """The call's own arrays on the host: the contract's inputs and alpha, and the scaled copies and
    guided filter when the engine runs below the photo's size."""
    full = batch * height * width * _HOST_BYTES_PER_PIXEL
    if (run_height, run_width) == (height, width):
        return full / MB
    return (full + batch * run_height * run_width * _SCALED_BYTES_PER_PIXEL) / MB + _STRIP_MB


class MemoryGate:
    """Reservations against one budget: concurrent calls on one engine wait rather than overrun it."""

    def __init__(self, capacity_mb: float) -> None:
        self.capacity_mb = capacity_mb
        self._used = 0.0
        self._ready = threading.Condition()

    @contextlib.contextmanager
    def reserve(self, megabytes: float) -> Iterator[None]:
        amount = min(megabytes, self.capacity_mb)  # a plan never asks for more; a lone call must always run
        with self._ready:
            while self._used > 0 and self._used + amount > self.capacity_mb:
                self._ready.wait()
            self._used += amount
        try:
            yield
        finally:
            with self._ready:
                self._used -= amount
                self._ready.notify_all()


@dataclass
class Sizing:
    """A :class:`SizePolicy` resolved for one opened engine: its budget, its memory estimator, and its gate.

    ``estimate(batch, height, width)`` predicts the engine's working memory of one call;
    ``max_height``/``max_width`` are the engine's own size limits (None: none).
    """

    policy: SizePolicy
    budget: Budget
    estimate: Estimator
    max_height: int | None = None
    max_width: int | None = None
    max_batch: int | None = None
    #: Shared by every engine that draws on one budget (a server's whole model and its sessions).
    gate: MemoryGate = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.gate is None:
            self.gate = MemoryGate(self.budget.call_mb)

    def _fits(self, batch: int, height: int, width: int, run_height: int, run_width: int) -> bool:
        return self._predicted(batch, height, width, run_height, run_width) <= self.budget.call_mb

    def _predicted(self, batch: int, height: int, width: int, run_height: int, run_width: int) -> float:
        engine = self.estimate(batch, run_height, run_width).total_mb
        if self.budget.device.startswith("cuda"):
            return engine
        return engine + host_memory_mb(batch, height, width, run_height, run_width)

    def _within_limits(self, height: int, width: int) -> bool:
        return (self.max_height is None or height <= self.max_height) and (
            self.max_width is None or width <= self.max_width
        )

    def _limit_side(self, height: int, width: int) -> int:
        """The longest long side the engine's own limits allow for this photo's aspect."""
        scale = 1.0
        if self.max_height is not None:
            scale = min(scale, self.max_height / height)
        if self.max_width is not None:
            scale = min(scale, self.max_width / width)
        side = int(max(height, width) * scale)
        while side > MIN_SIDE and not self._within_limits(*scaled_size(height, width, side)):
            side -= 1
        return side

    def plan(self, batch: int, height: int, width: int) -> SizePlan:
        """The size a ``batch x height x width`` input runs at (the module's rules), or one line saying why none fits.

        A batch is planned per image (one image's plan, the same whatever else is queued with it), and
        :meth:`chunk` says how many images of it run at once.
        """
        policy = self.policy
        long_side = max(height, width)
        full_ok = policy.max_side is None or long_side <= policy.max_side
        if full_ok and self._within_limits(height, width) and self._fits(1, height, width, height, width):
            return self._plan(batch, height, width, height, width, "full size")
        # Scaled: to --max-side or the engine's limits when those are what stops the full size, never above the
        # quality cap when memory is, and down to the largest size that fits.
        ceiling, reason = long_side, "scaled to fit the budget"
        if policy.max_side is not None and policy.max_side < ceiling:
            ceiling, reason = policy.max_side, f"scaled to --max-side {policy.max_side}"
        limit = self._limit_side(height, width)
        if limit < ceiling:
            ceiling, reason = limit, "scaled to the engine's size limits"
        if not self._fits(1, height, width, *scaled_size(height, width, ceiling)):
            ceiling, reason = min(ceiling, policy.scale_to), "scaled to fit the budget"
        side = self._largest_fitting(height, width, ceiling)
        if side is None:
            smallest = scaled_size(height, width, MIN_SIDE)
            need = self._predicted(1, height, width, *smallest)
            raise SmatError(
                f"a {width}x{height} photo needs at least {need:,.0f} MB even at {smallest[1]}x{smallest[0]}, more "
                f"than the {self.budget.call_mb:,.0f} MB a call may take ({self.budget.source}); raise --max-memory-mb"
            )
        if side < ceiling:
            reason = "scaled to fit the budget"
        return self._plan(batch, height, width, *scaled_size(height, width, side), reason)

    def _largest_fitting(self, height: int, width: int, ceiling: int) -> int | None:
        """The largest long side ``<= ceiling`` whose run fits (memory grows with the side), or None."""
        low, high = MIN_SIDE, ceiling
        if not self._fits(1, height, width, *scaled_size(height, width, low)):
            return None
        while low < high:
            middle = (low + high + 1) // 2
            if self._fits(1, height, width, *scaled_size(height, width, middle)):
                low = middle
            else:
                high = middle - 1
        return low

    def _plan(self, batch: int, height: int, width: int, run_height: int, run_width: int, reason: str) -> SizePlan:
        return SizePlan(
            batch=batch,
            height=height,
            width=width,
            run_height=run_height,
            run_width=run_width,
            engine=self.estimate(batch, run_height, run_width),
            host_mb=host_memory_mb(batch, height, width, run_height, run_width),
            budget=self.budget,
            reason=reason,
            upsampling=self.policy.upsampling,
        )

    def largest_full_size(self, aspect: tuple[int, int] = (4, 3)) -> tuple[int, int]:
        """``(width, height)`` of the largest photo of ``aspect`` (width, height) that runs at its full size here."""
        ratio_w, ratio_h = aspect
        low, high = MIN_SIDE, MAX_SIDE
        while low < high:
            middle = (low + high + 1) // 2
            size = _aspect_size(middle, ratio_w, ratio_h)
            low, high = (middle, high) if not self.plan(1, size[1], size[0]).scaled else (low, middle - 1)
        return _aspect_size(low, ratio_w, ratio_h)

    def chunk(self, plan: SizePlan) -> int:
        """How many images of ``plan``'s batch one engine call may take within the budget (at least 1)."""
        most = plan.batch if self.max_batch is None else min(plan.batch, self.max_batch)
        size = (plan.height, plan.width, plan.run_height, plan.run_width)
        while most > 1 and not self._fits(most, *size):
            most -= 1
        return most

    def run(
        self,
        run: RunFn,
        plan: SizePlan,
        image: np.ndarray,
        prompt: np.ndarray,
        state: np.ndarray,
        timings: dict[str, float] | None = None,
    ) -> np.ndarray:
        """Contract inputs at the photo's size -> ``alpha [B,1,H,W]`` at the photo's size, run as ``plan`` says.

        A scaled plan needs numpy arrays (scaling and upsampling run on the host); a full-size one runs the
        arrays as given, torch tensors on their device included.

        Each chunk of the batch reserves its predicted memory from the gate before it runs. ``timings``, when
        given, receives the seconds spent scaling down (``scale``), in the engine (``engine``) and bringing
        the alpha back (``upsample``).
        """
        step = self.chunk(plan)
        parts = []
        for start in range(0, plan.batch, step):
            stop = min(plan.batch, start + step)
            part = replace(plan, batch=stop - start)
            with self.gate.reserve(self._predicted(part.batch, *_sizes(part))):
                chunk = (image[start:stop], prompt[start:stop], state[start:stop])
                parts.append(run_at(run, part, *chunk, timings))
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts) if isinstance(parts[0], np.ndarray) else sys.modules["torch"].cat(parts)


def _aspect_size(long_side: int, ratio_w: int, ratio_h: int) -> tuple[int, int]:
    """``(width, height)`` with the long side ``long_side`` and the aspect ``ratio_w : ratio_h``."""
    if ratio_w >= ratio_h:
        return long_side, max(MIN_SIDE, long_side * ratio_h // ratio_w)
    return max(MIN_SIDE, long_side * ratio_w // ratio_h), long_side


def _sizes(plan: SizePlan) -> tuple[int, int, int, int]:
    return plan.height, plan.width, plan.run_height, plan.run_width


def shrink_prompt(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A prompt mask ``HxW`` at ``size``: nearest, as the official scripts scale prompts; a mask that marks
    pixels but loses all of them that way (a thin stroke, a tiny click) keeps every cell it touches."""
    small = resize_nearest(mask, size)
    if small.any() or not mask.any():
        return small
    covered = Image.fromarray((mask != 0).astype(np.float32), mode="F").resize((size[1], size[0]), Image.Resampling.BOX)
    return (np.asarray(covered) > 0).astype(mask.dtype)


class Rescale:
    """A batch of photos at a plan's run size, and the way back to the photos' size for their alphas.

    Made once per batch (a :class:`~smat_deploy.runtime.Predictor` keeps it with the embedding). The guided
    filter's statistics of each photo are computed once (:meth:`prepare`, or the first :meth:`alpha`), so
    each alpha then costs only its own part.
    """

    def __init__(self, plan: SizePlan, image: np.ndarray) -> None:
        self.plan = plan
        run_size = (plan.run_height, plan.run_width)
        self._photos = [np.ascontiguousarray(sample.transpose(1, 2, 0), dtype=np.float32) for sample in image]
        self._small = [resize_image(photo, run_size) for photo in self._photos]
        self.image = np.ascontiguousarray(np.stack(self._small).transpose(0, 3, 1, 2))
        self._guided: list[GuidedUpsampler] | None = None

    def prepare(self) -> Rescale:
        """Compute the guided filter's statistics of every photo now (an interactive session does, at embed time)."""
        if self.plan.upsampling == "guided" and self._guided is None:
            self._guided = [GuidedUpsampler(low, high) for low, high in zip(self._small, self._photos, strict=True)]
        return self

    @property
    def nbytes(self) -> int:
        """What it holds: the photos at both sizes and the guide's statistics."""
        held = self.image.nbytes + sum(photo.nbytes for photo in self._photos)
        return int(held + (sum(up.nbytes - up.full.nbytes for up in self._guided) if self._guided else 0))

    def prompt(self, prompt: np.ndarray) -> np.ndarray:
        """``prompt [B,1,H,W]`` at the run size (:func:`shrink_prompt`)."""
        run_size = (self.plan.run_height, self.plan.run_width)
        return np.stack([shrink_prompt(sample[0], run_size)[None] for sample in prompt]).astype(np.float32)

    def alpha(self, alpha: np.ndarray) -> np.ndarray:
        """``alpha [B,1,h,w]`` at the run size -> ``[B,1,H,W]`` at the photos' size, by the plan's upsampling."""
        size = (self.plan.height, self.plan.width)
        self.prepare()
        if self._guided is not None:
            return np.stack([up(alpha[index, 0])[None] for index, up in enumerate(self._guided)])
        return np.stack([upsample_alpha(a[0], size, self.plan.upsampling)[None] for a in alpha])


def run_at(
    run: RunFn,
    plan: SizePlan,
    image: np.ndarray,
    prompt: np.ndarray,
    state: np.ndarray,
    timings: dict[str, float] | None = None,
) -> np.ndarray:
    """One engine call as ``plan`` says (numpy contract arrays in, ``alpha [B,1,H,W]`` at the photo's size out)."""
    clock = _Clock(timings)
    if not plan.scaled:  # the caller's arrays as they are: numpy, or torch tensors on their device
        with clock("engine"):
            return run(image, prompt, state)
    with clock("scale"):
        rescale = Rescale(plan, image)
        small_prompt = rescale.prompt(prompt)
    with clock("engine"):
        small = np.asarray(run(rescale.image, small_prompt, state))
    with clock("upsample"):
        return rescale.alpha(small)


class _Clock:
    """Adds the seconds of each ``with clock(stage):`` block to ``timings[stage]`` (nothing when None)."""

    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = timings

    @contextlib.contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            if self.timings is not None:
                self.timings[stage] = self.timings.get(stage, 0.0) + time.perf_counter() - start


class OutOfMemory(SmatError):
    """A backend could not allocate what a call needed: one line with the size, the prediction and what to change."""


#: Words runtimes use when an allocation fails (ONNX Runtime, OpenVINO, PyTorch, TensorRT, the C++ runtime).
_ALLOCATION_FAILURES = (
    "failed to allocate memory",
    "bad_alloc",
    "out of memory",
    "can't allocate memory",
    "cannot allocate memory",
    "not enough memory",
    "allocation failed",
)


def is_allocation_failure(error: BaseException) -> bool:
    """Whether ``error`` (raised by a backend) says an allocation failed."""
    if isinstance(error, MemoryError):
        return True
    text = str(error).lower()
    return type(error).__name__ == "OutOfMemoryError" or any(words in text for words in _ALLOCATION_FAILURES)


def out_of_memory(error: BaseException, batch: int, height: int, width: int, estimate: MemoryEstimate) -> OutOfMemory:
    """The one-line report of an allocation failure at ``batch x height x width``."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0][:160]
    return OutOfMemory(
        f"the engine ran out of memory at {width}x{height} (batch {batch}; predicted {estimate.total_mb:,.0f} MB): "
        f"{first}; lower --max-side or --max-memory-mb so large photos are scaled"
    )
