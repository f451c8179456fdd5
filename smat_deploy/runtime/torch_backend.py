"""PyTorch backend: the reference model itself, so every other engine can be compared with it.

Opened from ``"torch"`` (the built-in default weights), a checkpoint (``.pth``/``.pt``, any format
:func:`smat_deploy.load_model` reads) or an :class:`~smat_deploy.SMat` instance. Runs the reference
forward pass (official position-embedding resize), in eval mode and under ``inference_mode``, which
is safe to call from several threads. torch and the model are imported when an engine is opened.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any, ClassVar

from smat_deploy.runtime.base import THREADS, Array, Backend, BackendOption, is_installed
from smat_deploy.runtime.devices import as_torch, torch_device
from smat_deploy.runtime.memory import PROFILES

#: The name that opens the reference with the built-in default weights.
TORCH_ENGINE = "torch"


def _is_smat_module(engine: object) -> bool:
    smat = sys.modules.get("smat_deploy.model.smat")  # an SMat instance means the model module is loaded
    return smat is not None and isinstance(engine, smat.SMat)


class TorchBackend(Backend):
    name = "torch"
    summary = "the PyTorch reference model: 'torch' (built-in weights), a .pth/.pt checkpoint or an SMat module"
    suffixes = (".pth", ".pt")
    devices = ("cpu", "cuda")
    options: ClassVar[Mapping[str, BackendOption]] = {
        "threads": THREADS,
        "seed": BackendOption(int, "seed of the built-in default weights ('torch' only)"),
    }
    install = "pip install 'smat-deploy[export]'"

    model: Any

    @classmethod
    def accepts(cls, engine: object) -> bool:
        return engine == TORCH_ENGINE or _is_smat_module(engine) or super().accepts(engine)

    @classmethod
    def unavailable_reason(cls) -> str | None:
        missing = [name for name in ("torch", "timm") if not is_installed(name)]
        if missing:
            return f"the torch backend needs {' and '.join(missing)}, not installed here ({cls.install})"
        return None

    @classmethod
    def open(
        cls, engine: object, *, device: str = "auto", threads: int | None = None, seed: int | None = None
    ) -> TorchBackend:
        import torch

        from smat_deploy.model import describe_weights, load_model

        target = torch_device(device)
        if threads:
            torch.set_num_threads(threads)  # process-wide: torch has no per-model thread pool
        if _is_smat_module(engine):
            model, weights, source = engine, "the given SMat module", "SMat module"
        else:
            checkpoint = None if engine == TORCH_ENGINE else os.fspath(engine)  # type: ignore[arg-type]
            model = load_model(checkpoint, seed=seed or 0)
            weights, source = describe_weights(checkpoint, seed or 0), str(engine)
        model = model.to(target).eval()
        backend = cls(
            source=source,
            precision=str(next(model.parameters()).dtype).removeprefix("torch."),
            device=str(target),
            providers=[f"torch-{target.type}"],
            details={"weights": weights, "threads": torch.get_num_threads()},
            memory_profile=PROFILES["torch"],
        )
        backend.model = model
        return backend

    def run(self, image: Array, prompt: Array, state: Array) -> Array:
        import torch

        device = next(self.model.parameters()).device
        tensors = [as_torch(a).to(device) for a in (image, prompt, state)]
        with torch.inference_mode():
            return self.model(*tensors)
