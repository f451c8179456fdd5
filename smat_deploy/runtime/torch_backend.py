"""PyTorch backend: the reference model itself, so every other engine can be compared with it.

Opened from ``"torch"`` (the built-in default weights), a checkpoint (``.pth``/``.pt``, any format
:func:`smat_deploy.load_model` reads) or an :class:`~smat_deploy.SMat` instance. Runs the reference
forward pass (official position-embedding resize), in eval mode and under ``inference_mode``, which
is safe to call from several threads. torch and the model are imported when an engine is opened.

Roles: ``whole`` is ``SMat.forward``; the interactive pair is the reference's own split, ``SMat.embed``
(encoder: ``image`` -> ``features, class_token, image16, detail2, detail3``) and ``SMat.decode`` (decoder:
those tensors, ``prompt`` and ``state`` -> ``alpha``), which equal the whole forward exactly. Its embedding
carries ``detail3`` where the exported pair carries ``fusion0`` (the first fusion convolution over it,
computed once); an embedding is only ever decoded by the engine that made it. :meth:`TorchBackend.open_pair`
opens both halves on one model.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any, ClassVar

from smat_deploy.contract import ROLES, TensorSpec
from smat_deploy.runtime.base import THREADS, Array, Backend, BackendOption, is_installed
from smat_deploy.runtime.devices import as_torch, torch_device
from smat_deploy.runtime.memory import PAIR_PROFILES, PROFILES

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
        cls,
        engine: object,
        *,
        device: str = "auto",
        role: str = "whole",
        threads: int | None = None,
        seed: int | None = None,
    ) -> TorchBackend:
        return cls._with_model(*cls._load(engine, device, threads, seed), role)

    @classmethod
    def open_pair(cls, encoder: object, decoder: object, *, device: str, **options: Any) -> tuple[Backend, Backend]:
        """Both halves on one model (``encoder`` and ``decoder`` name the same weights: ``"torch"``, a checkpoint
        or an SMat module)."""
        loaded = cls._load(encoder, device, options.get("threads"), options.get("seed"))
        return cls._with_model(*loaded, "encoder"), cls._with_model(*loaded, "decoder")

    @staticmethod
    def _load(engine: object, device: str, threads: int | None, seed: int | None) -> tuple[Any, str, str, Any]:
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
        return model.to(target).eval(), weights, source, target

    @classmethod
    def _with_model(cls, model: Any, weights: str, source: str, target: Any, role: str) -> TorchBackend:
        import torch

        from smat_deploy.model import Embedding

        inputs, outputs = ROLES[role].specs
        embedding = tuple(TensorSpec(name, "float32", ()) for name in Embedding.TENSORS)  # the reference's own
        if role == "encoder":
            outputs = embedding
        elif role == "decoder":
            inputs = embedding + inputs[-2:]
        backend = cls(
            source=source,
            precision=str(next(model.parameters()).dtype).removeprefix("torch."),
            device=str(target),
            providers=[f"torch-{target.type}"],
            inputs=inputs,
            outputs=outputs,
            details={"weights": weights, "threads": torch.get_num_threads()},
            memory_profile=PROFILES["torch"] if role == "whole" else PAIR_PROFILES["torch"],
            role=role,
        )
        backend.model = model
        return backend

    def infer(self, feed: Mapping[str, Array]) -> dict[str, Array]:
        import torch

        from smat_deploy.model import Embedding

        device = next(self.model.parameters()).device
        tensors = {name: as_torch(value).to(device) for name, value in feed.items()}
        with torch.inference_mode():
            if self.role == "whole":
                return {"alpha": self.model(tensors["image"], tensors["prompt"], tensors["state"])}
            if self.role == "encoder":
                return dict(zip(Embedding.TENSORS, self.model.embed(tensors["image"]).tensors(), strict=True))
            height, width = tensors["prompt"].shape[-2:]
            embedding = Embedding(**{name: tensors[name] for name in Embedding.TENSORS}, height=height, width=width)
            return {"alpha": self.model.decode(embedding, tensors["prompt"], tensors["state"])}
