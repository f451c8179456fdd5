"""PyTorch backend: the reference model itself, so every other engine can be compared with it.

Opened from ``"torch"`` (the built-in default weights), a checkpoint (``.pth``/``.pt``, any format
:func:`smat_deploy.load_model` reads) or an :class:`~smat_deploy.SMat` instance. Runs the reference
forward pass (official position-embedding resize), in eval mode and under ``inference_mode``, which
is safe to call from several threads.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from smat_deploy.errors import SmatError
from smat_deploy.model import SMat, describe_weights, load_model
from smat_deploy.runtime.base import Array, Backend, as_torch, torch_device

#: The name that opens the reference with the built-in default weights.
TORCH_ENGINE = "torch"


class TorchBackend(Backend):
    name = "torch"
    suffixes = (".pth", ".pt")

    model: SMat

    @classmethod
    def open(
        cls,
        engine: object,
        *,
        device: str = "auto",
        providers: Sequence[str] | None = None,
        threads: int | None = None,
        seed: int = 0,
    ) -> TorchBackend:
        if providers is not None:
            raise SmatError("providers are ONNX Runtime execution providers; the torch engine takes device= only")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        target = torch_device(device)
        if threads:
            torch.set_num_threads(threads)  # process-wide: torch has no per-model thread pool
        if isinstance(engine, SMat):
            model, weights, source = engine, "the given SMat module", "SMat module"
        else:
            checkpoint = None if engine == TORCH_ENGINE else os.fspath(engine)  # type: ignore[arg-type]
            model = load_model(checkpoint, seed=seed)
            weights, source = describe_weights(checkpoint, seed), str(engine)
        model = model.to(target).eval()
        backend = cls(
            source=source,
            precision=str(next(model.parameters()).dtype).removeprefix("torch."),
            device=str(target),
            providers=[f"torch-{target.type}"],
            details={"weights": weights, "threads": torch.get_num_threads()},
        )
        backend.model = model
        return backend

    def run(self, image: Array, prompt: Array, state: Array) -> torch.Tensor:
        device = next(self.model.parameters()).device
        tensors = [as_torch(a).to(device) for a in (image, prompt, state)]
        with torch.inference_mode():
            return self.model(*tensors)
