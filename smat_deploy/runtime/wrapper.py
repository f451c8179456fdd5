"""``Runtime``: one call for every engine, whatever it is, with the caller's arrays in and out.

``Runtime.open`` picks the backend (the one named, or the first in the registry that accepts the
engine: ``.onnx`` -> ONNX Runtime, ``.plan``/``.engine`` -> TensorRT, ``"torch"``, a ``.pth``/``.pt``
checkpoint or an SMat module -> the PyTorch reference), checks the engine against the SMat I/O
contract, and ``runtime(image, prompt, state)`` validates the inputs against that contract and the
engine's size limits before running it. Nothing here imports PyTorch.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smat_deploy.errors import SmatError
from smat_deploy.runtime.base import Array, Backend, file_role
from smat_deploy.runtime.devices import parse_device, to_host
from smat_deploy.runtime.inputs import prepare_inputs, restore_output
from smat_deploy.runtime.registry import backend_for
from smat_deploy.runtime.sizing import (
    Budget,
    MemoryGate,
    SizePlan,
    SizePolicy,
    Sizing,
    is_allocation_failure,
    out_of_memory,
    resolve_budget,
)

#: A path, ``"torch"`` (the reference with its built-in weights) or an SMat module.
EngineSpec = Any
#: What ``size_policy=`` takes: a :class:`SizePolicy`, ``"auto"`` or True (the defaults), or None (off).
SizePolicyArg = SizePolicy | str | bool | None


def as_size_policy(value: SizePolicyArg) -> SizePolicy | None:
    """``size_policy=`` as a :class:`SizePolicy` (None: photos run at their own size, as given)."""
    if value is None or value is False:
        return None
    if value is True or value == "auto":
        return SizePolicy()
    if isinstance(value, SizePolicy):
        return value
    raise SmatError(f"size_policy must be a SizePolicy, 'auto', True or None, got {value!r}")


def sizing_for(
    backend: Backend,
    policy: SizePolicy,
    reserved_mb: float = 0.0,
    budget: Budget | None = None,
    gate: MemoryGate | None = None,
) -> Sizing:
    """``policy`` resolved for an opened backend: the budget (measured now unless given), its memory estimate
    and size limits; ``gate`` shares reservations with other engines drawing on the same budget."""
    limits = backend.limits
    return Sizing(
        policy,
        budget if budget is not None else resolve_budget(policy, backend.device, reserved_mb),
        backend.estimate_memory,
        max_height=limits.height[1],
        max_width=limits.width[1],
        max_batch=limits.batch[1],
        gate=gate,  # type: ignore[arg-type]
    )


def check_options(backend: type[Backend], options: dict[str, Any]) -> dict[str, Any]:
    """``options`` parsed by the backend's declarations; None values count as not given."""
    given = {name: value for name, value in options.items() if value is not None}
    parsed = {}
    for name, value in given.items():
        declared = backend.options.get(name)
        if declared is None:
            takes = ", ".join(backend.options) or "no options"
            raise SmatError(f"backend {backend.name} does not take option {name!r} (it takes: {takes})")
        parsed[name] = declared.parse(backend.name, name, value)
    return parsed


def shared_options(backend: type[Backend], **settings: Any) -> dict[str, Any]:
    """Settings a tool applies to every engine it opens (``threads``, ``seed``): those this backend declares."""
    return {name: value for name, value in settings.items() if name in backend.options and value is not None}


def engine_options(backend: type[Backend], backend_options: dict[str, Any], **settings: Any) -> dict[str, Any]:
    """What a tool opens an engine with: its ``settings`` (``threads``, ``seed``) where ``backend`` declares
    them, then ``backend_options``, which the backend must take and which win over a setting."""
    return {**shared_options(backend, **settings), **check_options(backend, backend_options)}


def check_device(backend: type[Backend], device: str) -> None:
    kind = parse_device(device).kind
    if kind != "auto" and kind not in backend.devices:
        raise SmatError(f"backend {backend.name} runs on {' or '.join(backend.devices)}, not {device}")


@dataclass(frozen=True)
class RuntimeInfo:
    """What an opened engine is and runs on: shown by ``bench`` and ``matte --json``."""

    backend: str
    engine: str
    precision: str
    device: str
    providers: list[str]
    inputs: list[dict]
    outputs: list[dict]
    limits: dict
    details: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "backend": self.backend,
            "engine": self.engine,
            "precision": self.precision,
            "device": self.device,
            "providers": self.providers,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "limits": self.limits,
            **self.details,
        }


@dataclass(frozen=True)
class CallReport:
    """How one :meth:`Runtime.call` went: its size plan (None without a size policy) and where the time went.

    ``stages``: seconds spent scaling the photo down (``scale``), in the engine (``engine``) and bringing
    the alpha back to the photo's size (``upsample``); ``seconds`` is the whole call.
    """

    plan: SizePlan | None
    seconds: float
    stages: dict[str, float]

    def as_dict(self) -> dict:
        return {
            "plan": None if self.plan is None else self.plan.as_dict(),
            "seconds": round(self.seconds, 4),
            "stages": {name: round(value, 4) for name, value in self.stages.items()},
        }


class Runtime:
    """An SMat engine behind one call: ``alpha = runtime(image, prompt=None, state=None)``.

    - ``image``: one photo ``HxWx3`` (uint8, or float in [0, 1]) or a batch ``Bx3xHxW``; numpy or
      torch (CPU or CUDA).
    - ``prompt``: None (automatic), a mask (``HxW`` or ``Bx1xHxW``) or prompt objects (JSON dicts
      such as ``{"type": "point", "x": 320, "y": 240}`` or :mod:`smat_deploy.prompts` objects).
    - ``state``: None (interactive where the prompt marks a pixel), 0/1, or one value per sample.
    - returns alpha in [0, 1] as the caller's kind: ``HxW`` for one photo, ``Bx1xHxW`` for a batch.

    Bad inputs raise :class:`~smat_deploy.SmatError` before the engine runs. Safe to call from
    several threads at once.
    """

    def __init__(self, backend: Backend, sizing: Sizing | None = None) -> None:
        self.backend = backend
        self.sizing = sizing

    @classmethod
    def open(
        cls,
        engine: EngineSpec,
        backend: str | None = None,
        device: str = "auto",
        *,
        size_policy: SizePolicyArg = None,
        **backend_options: Any,
    ) -> Runtime:
        """Open ``engine`` with ``backend`` (default: the first registered backend that accepts it).

        ``size_policy``: None (default) runs every photo at its own size, as given. A
        :class:`~smat_deploy.runtime.sizing.SizePolicy` (or ``"auto"`` for the defaults) runs a photo at its
        full size when it fits the memory budget, and otherwise scaled down to fit, with the alpha brought
        back to the photo's size by guided upsampling (docs/photo-sizes.md).

        ``device``: ``auto`` (a GPU when one is usable and the backend can use it, else the CPU),
        ``cpu``, ``cuda`` or ``cuda:N``; a requested GPU that cannot be used is an error, never a
        silent CPU run. ``backend_options``: what the backend declares (``Backend.options``; for
        example ``threads`` for torch, ONNX Runtime and OpenVINO, ``providers`` for ONNX Runtime,
        ``seed`` for the torch engine's built-in weights); another option is an error.
        """
        chosen = backend_for(engine, backend)
        options = check_options(chosen, backend_options)
        check_device(chosen, device)
        if isinstance(engine, str | os.PathLike) and Path(engine).suffix.lower() in chosen.suffixes:
            if not Path(engine).is_file():
                raise SmatError(f"engine not found: {engine}")
            if (role := file_role(engine)) not in (None, "whole"):
                raise SmatError(
                    f"{Path(engine).name} is the interactive pair's {role}, not a whole model: open the pair with "
                    "Predictor.open (or give the whole model, smat.onnx)"
                )
        if (reason := chosen.unavailable_reason()) is not None:
            raise SmatError(reason)
        policy = as_size_policy(size_policy)
        opened = chosen.open(engine, device=device, role="whole", **options)
        return cls(opened, None if policy is None else sizing_for(opened, policy))

    def use_size_policy(
        self, policy: SizePolicy | None, budget: Budget | None = None, gate: MemoryGate | None = None
    ) -> None:
        """Run photos under ``policy`` from now on (None: at their own size); ``budget`` and ``gate`` as for
        :func:`sizing_for` (a server shares them between its whole model and its sessions)."""
        self.sizing = None if policy is None else sizing_for(self.backend, policy, budget=budget, gate=gate)

    def plan(self, batch: int, height: int, width: int) -> SizePlan | None:
        """How a ``batch x height x width`` input would run under this runtime's size policy (None: no policy)."""
        return None if self.sizing is None else self.sizing.plan(batch, height, width)

    def __call__(self, image: object, prompt: object = None, state: object = None) -> Array:
        return self.call(image, prompt, state)[0]

    def call(self, image: object, prompt: object = None, state: object = None) -> tuple[Array, CallReport]:
        """As calling the runtime, plus a :class:`CallReport`: the plan it ran by and the seconds of each stage."""
        start = time.perf_counter()
        prepared = prepare_inputs(image, prompt, state)
        timings: dict[str, float] = {}
        if self.sizing is None:
            self.backend.limits.check(*prepared.shape, source=self.backend.source)
            plan = None
            engine_start = time.perf_counter()
            alpha = self._run(prepared.image, prepared.prompt, prepared.state)
            timings["engine"] = time.perf_counter() - engine_start
        else:
            if self.backend.limits.fixed:  # an engine of one exact size: scaling could not keep the photo's aspect
                self.backend.limits.check(*prepared.shape, source=self.backend.source)
            plan = self.sizing.plan(*prepared.shape)
            # The plan keeps under the engine's upper limits; a run below its lower ones (a TensorRT profile's
            # minimum) is refused as any input outside them is.
            self.backend.limits.check(
                self.backend.limits.batch[0], plan.run_height, plan.run_width, self.backend.source
            )
            arrays = [prepared.image, prepared.prompt, prepared.state]
            if plan.scaled:  # scaling and upsampling happen on the host; a full-size run keeps the caller's arrays
                arrays = [to_host(array) for array in arrays]
            alpha = self.sizing.run(self._run, plan, *arrays, timings=timings)
        alpha = restore_output(alpha, prepared)
        return alpha, CallReport(plan, time.perf_counter() - start, timings)

    def _run(self, image: Array, prompt: Array, state: Array) -> Array:
        """The backend's call; an allocation failure inside it becomes one line saying so (:class:`OutOfMemory`)."""
        try:
            return self.backend.run(image, prompt, state)
        except SmatError:
            raise
        except Exception as err:
            if not is_allocation_failure(err):
                raise
            batch, _, height, width = (int(d) for d in image.shape)
            raise out_of_memory(err, batch, height, width, self.backend.estimate_memory(batch, height, width)) from None

    @property
    def info(self) -> RuntimeInfo:
        backend = self.backend
        return RuntimeInfo(
            backend=backend.name,
            engine=backend.source,
            precision=backend.precision,
            device=backend.device,
            providers=list(backend.providers),
            inputs=[spec.as_dict() for spec in backend.inputs],
            outputs=[spec.as_dict() for spec in backend.outputs],
            limits=backend.limits.as_dict(),
            details=dict(backend.details),
        )

    def __repr__(self) -> str:
        return f"Runtime({self.backend.name}: {self.backend.source}, {self.backend.precision}, {self.backend.device})"
