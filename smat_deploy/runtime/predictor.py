"""Interactive matting: embed a photo once, answer every prompt from the embedding (:class:`Predictor`).

SMat's backbone and ConvStream never see the prompt, so a click only needs the decoder: the
candidate token, the prompt cross-attention, the similarity map and the fusion stages. A predictor is
two engines of one backend from the registry (:mod:`smat_deploy.runtime.registry`), the pair's encoder
and its decoder, each opened as its role of the contract:

- the exported pair (``smat-deploy export --interactive``: ``smat_encoder.onnx`` and ``smat_decoder.onnx``,
  or a precision's pair such as ``smat_encoder_cpu.onnx``) on ONNX Runtime (the default for ``.onnx``) or
  OpenVINO, or its TensorRT engines (``smat-deploy build --interactive``: ``smat_encoder.plan`` and
  ``smat_decoder.plan``); the pair is found and checked by :func:`smat_deploy.pair.find_pair` (manifests
  naming each other, the same weights, one precision, the roles' I/O). No PyTorch is needed but for TensorRT;
- the PyTorch reference (``"torch"``, a checkpoint, or an ``SMat`` module): :meth:`SMat.embed` and
  :meth:`SMat.decode`, which equal the whole forward exactly.

A backend added to the registry serves ``Predictor`` as it serves ``Runtime``. Embeddings stay where
they were made (numpy on the CPU, torch tensors or ONNX Runtime values on their GPU), are never
modified, and may be used from several threads at once; another predictor (other weights, another
backend or precision) refuses them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smat_deploy.contract import dtype_name, padded_grid
from smat_deploy.errors import SmatError
from smat_deploy.pair import find_pair
from smat_deploy.runtime.base import Backend
from smat_deploy.runtime.devices import is_tensor, parse_device, to_host
from smat_deploy.runtime.inputs import prepare_image, prepare_prompt_for, prepare_state, restore
from smat_deploy.runtime.memory import MemoryEstimate, pair_estimate
from smat_deploy.runtime.registry import backend_class, backend_for
from smat_deploy.runtime.sizing import (
    Budget,
    MemoryGate,
    Rescale,
    SizePlan,
    SizePolicy,
    Sizing,
    is_allocation_failure,
    out_of_memory,
    resolve_budget,
)
from smat_deploy.runtime.wrapper import as_size_policy, check_device, check_options


@dataclass(frozen=True, eq=False)
class PhotoEmbedding:
    """One photo (or batch) embedded by a :class:`Predictor`: pass it to :meth:`Predictor.predict`.

    ``tensors`` maps names to arrays on :attr:`device`: the exported pair's embedding
    (``contract.EMBEDDING_NAMES``: ``features``, ``class_token``, ``image16``, ``detail2``, ``fusion0``)
    or, on the torch engine, the reference's (``SMat.embed``: ``detail3`` in place of ``fusion0``);
    ``nbytes`` is what it holds in memory. ``height`` and ``width`` are the photo's (prompts have that
    size); ``run_height`` and ``run_width`` the size the encoder ran at, smaller when a size policy
    scaled the photo (``rescale`` then brings each alpha back to the photo's size).
    """

    tensors: Mapping[str, Any]
    batch: int
    height: int
    width: int
    device: str
    #: Identifies the weights, backend and precision that made it: only a predictor with the same key decodes it.
    model_key: str
    #: The caller gave one ``HxWx3`` photo: alphas come back as ``HxW``.
    single: bool = False
    #: The caller's torch device (alphas come back there as tensors), or None for numpy.
    caller_device: Any = None
    nbytes: int = field(default=0)
    run_height: int | None = None
    run_width: int | None = None
    rescale: Rescale | None = None

    @property
    def run_size(self) -> tuple[int, int]:
        """``(height, width)`` the encoder ran at: the photo's own unless a size policy scaled it."""
        return (self.run_height or self.height, self.run_width or self.width)

    @property
    def grid(self) -> tuple[int, int]:
        return padded_grid(*self.run_size)

    def __repr__(self) -> str:
        run = "" if self.rescale is None else f" run at {self.run_size[1]}x{self.run_size[0]}"
        return (
            f"PhotoEmbedding({self.batch}x{self.height}x{self.width}{run}, {self.nbytes / 1e6:.1f} MB on {self.device})"
        )


def _is_torch_source(source: object) -> bool:
    smat = sys.modules.get("smat_deploy.model.smat")
    if source == "torch" or (smat is not None and isinstance(source, smat.SMat)):
        return True
    return isinstance(source, str | os.PathLike) and Path(source).suffix.lower() in (".pth", ".pt")


class Predictor:
    """Embed once, predict per prompt::

        predictor = Predictor.open("export/")                      # the pair from `smat-deploy export --interactive`
        predictor = Predictor.open("export/", backend="openvino")  # the same files on OpenVINO
        embedding = predictor.embed(image)               # HxWx3 uint8/float, or Bx3xHxW; numpy or torch
        alpha = predictor.predict(embedding, prompt)     # what Runtime returns for the same inputs

    ``source``: a folder holding the pair (``precision`` picks the files: ``float32`` is
    ``smat_encoder.onnx`` + ``smat_decoder.onnx``, ``cpu`` the ``_cpu`` pair, ...; the ``.plan`` pair of
    ``build --interactive`` the same way), a pair's encoder file, ``"torch"`` (the built-in weights), a
    ``.pth``/``.pt`` checkpoint or an ``SMat`` module. ``backend``: any registered backend that opens the
    files (default: by file type, ``.onnx`` -> ONNX Runtime, ``.plan`` -> TensorRT). ``device``: ``auto``,
    ``cpu``, ``cuda`` or ``cuda:N``. ``backend_options``: what the backend declares (``threads``,
    ``providers``, OpenVINO's ``hint``, the torch engine's ``seed``). ``size_policy``: as for
    :meth:`Runtime.open <smat_deploy.runtime.Runtime.open>` (None: every photo is embedded at its own size);
    with one, a photo too large for the budget is embedded scaled down and every alpha comes back at the
    photo's size by guided upsampling. Safe to use from several threads at once.
    """

    def __init__(
        self, encoder: Backend, decoder: Backend, weights_sha256: str, source: str, sizing: Sizing | None = None
    ) -> None:
        self.encoder, self.decoder = encoder, decoder
        self.weights_sha256 = weights_sha256
        self.source = source
        self.sizing = sizing
        self.model_key = f"{weights_sha256}:{encoder.name}:{encoder.precision}"

    @classmethod
    def open(
        cls,
        source: object,
        backend: str | None = None,
        device: str = "auto",
        *,
        precision: str | None = None,
        size_policy: SizePolicy | str | bool | None = None,
        reserved_mb: float = 0.0,
        **backend_options: Any,
    ) -> Predictor:
        parse_device(device)
        policy = as_size_policy(size_policy)
        if _is_torch_source(source):
            chosen = backend_class(backend or "torch")
            if chosen.name != "torch":
                raise SmatError(
                    f"{_describe(source)} is the PyTorch reference: it runs on backend torch, not {backend}"
                )
            if isinstance(source, str | os.PathLike) and source != "torch" and not Path(source).is_file():
                raise SmatError(f"checkpoint not found: {source}")
            encoder, decoder = cls._open_pair(chosen, source, source, device, backend_options)
            from smat_deploy.model import weights_digest

            weights, where = weights_digest(encoder.model), encoder.source  # type: ignore[attr-defined]
        else:
            if not isinstance(source, str | os.PathLike):
                raise SmatError(f"Predictor source must be a folder, a file or 'torch', got {type(source).__name__}")
            suffix = None if backend is None else _suffix_of(backend)
            if backend is not None:  # a bad option or device is refused before any file is read
                check_options(backend_class(backend), backend_options)
                check_device(backend_class(backend), device)
            pair = find_pair(source, precision, suffix)
            chosen = backend_for(pair.encoder, backend)
            encoder, decoder = cls._open_pair(chosen, pair.encoder, pair.decoder, device, backend_options)
            weights, where = pair.weights_sha256, str(pair.folder)
        predictor = cls(encoder, decoder, weights, where)
        if policy is not None:
            predictor.use_size_policy(policy, resolve_budget(policy, encoder.device, reserved_mb))
        return predictor

    @staticmethod
    def _open_pair(
        chosen: type[Backend], encoder: object, decoder: object, device: str, backend_options: dict
    ) -> tuple[Backend, Backend]:
        options = check_options(chosen, backend_options)
        check_device(chosen, device)
        if (reason := chosen.unavailable_reason()) is not None:
            raise SmatError(reason)
        return chosen.open_pair(encoder, decoder, device=device, **options)

    def use_size_policy(
        self, policy: SizePolicy | None, budget: Budget | None = None, gate: MemoryGate | None = None
    ) -> None:
        """Embed photos under ``policy`` from now on (None: at their own size); ``budget`` (measured now when
        None) and ``gate`` may be shared with a :class:`~smat_deploy.runtime.Runtime` drawing on the same memory."""
        if policy is None:
            self.sizing = None
            return
        profile = self.encoder.memory_profile

        def estimate(batch: int, height: int, width: int) -> MemoryEstimate:
            return pair_estimate(profile, batch, height, width)

        budget = budget if budget is not None else resolve_budget(policy, self.encoder.device)
        self.sizing = Sizing(policy, budget, estimate, gate=gate)  # type: ignore[arg-type]

    @property
    def backend(self) -> str:
        return self.encoder.name

    @property
    def device(self) -> str:
        return self.encoder.device

    @property
    def precision(self) -> str:
        return self.encoder.precision

    def plan(self, batch: int, height: int, width: int) -> SizePlan | None:
        """How a ``batch x height x width`` photo would be embedded under the size policy (None: no policy)."""
        return None if self.sizing is None else self.sizing.plan(batch, height, width)

    def embed(self, image: object) -> PhotoEmbedding:
        """Run the encoder once: ``image`` as :class:`~smat_deploy.Runtime` takes it -> :class:`PhotoEmbedding`."""
        batch_image, single = prepare_image(image)
        caller_device = batch_image.device if is_tensor(batch_image) else None
        batch, _, height, width = (int(d) for d in batch_image.shape)
        rescale = None
        if self.sizing is None:
            tensors = self._call(self.encoder, {"image": batch_image})
        else:
            plan = self.sizing.plan(batch, height, width)
            if self.sizing.chunk(plan) < batch:
                raise SmatError(
                    f"{batch} photos of {width}x{height} do not fit the memory budget at once "
                    f"({plan.predicted_mb:,.0f} MB for one): embed fewer at a time"
                )
            with self.sizing.gate.reserve(plan.predicted_mb):
                if plan.scaled:  # scaled on the host; a full-size photo stays where the caller put it
                    rescale = Rescale(plan, to_host(batch_image)).prepare()  # the guide once, not per click
                    tensors = self._call(self.encoder, {"image": rescale.image})
                else:
                    tensors = self._call(self.encoder, {"image": batch_image})
        run_height, run_width = (height, width) if rescale is None else rescale.image.shape[2:]
        return PhotoEmbedding(
            tensors=tensors,
            batch=batch,
            height=height,
            width=width,
            device=self.encoder.device,
            model_key=self.model_key,
            single=single,
            caller_device=caller_device,
            nbytes=sum(_nbytes(t) for t in tensors.values()) + (0 if rescale is None else rescale.nbytes),
            run_height=int(run_height),
            run_width=int(run_width),
            rescale=rescale,
        )

    def predict(self, embedding: PhotoEmbedding, prompt: object = None, state: object = None) -> Any:
        """Run the decoder on ``embedding``: prompt and state as :class:`~smat_deploy.Runtime` takes them.

        Returns alpha in [0, 1] as the embedded image's kind: ``HxW`` for one photo, ``Bx1xHxW``
        for a batch. A prompt must have the embedded photo's size.
        """
        if not isinstance(embedding, PhotoEmbedding):
            raise SmatError(f"predict needs a PhotoEmbedding from Predictor.embed, got {type(embedding).__name__}")
        if embedding.model_key != self.model_key:
            theirs, ours = embedding.model_key, self.model_key
            raise SmatError(
                f"this embedding was made by another model or engine ({theirs.split(':', 1)[1]}, weights "
                f"{theirs[:12]}), not by this predictor ({ours.split(':', 1)[1]}, weights {ours[:12]}): "
                "embed the photo again"
            )
        shape = (embedding.batch, embedding.height, embedding.width)
        rescale = embedding.rescale
        like = _like(None if rescale is not None else embedding.caller_device)
        batch_prompt = prepare_prompt_for(prompt, shape, like)
        batch_state = prepare_state(state, batch_prompt)
        if rescale is None:
            alpha = self._call(self.decoder, {**embedding.tensors, "prompt": batch_prompt, "state": batch_state})
        else:
            small_prompt = rescale.prompt(to_host(batch_prompt))
            small = self._call(self.decoder, {**embedding.tensors, "prompt": small_prompt, "state": batch_state})
            alpha = {"alpha": rescale.alpha(to_host(small["alpha"]))}
        return restore(alpha["alpha"], embedding.caller_device, embedding.single)

    @staticmethod
    def _call(engine: Backend, feed: Mapping[str, Any]) -> dict[str, Any]:
        """One engine call; an allocation failure inside it is one line saying so (as for ``Runtime``)."""
        try:
            return engine.infer(feed)
        except SmatError:
            raise
        except Exception as err:
            if not is_allocation_failure(err):
                raise
            batch, _, height, width = (int(d) for d in feed["image" if engine.role == "encoder" else "prompt"].shape)
            raise out_of_memory(err, batch, height, width, engine.estimate_memory(batch, height, width)) from None

    def __call__(self, image: object, prompt: object = None, state: object = None) -> Any:
        """Embed and predict in one call (the whole model's answer, through the pair)."""
        return self.predict(self.embed(image), prompt, state)

    @property
    def info(self) -> dict:
        encoder = self.encoder
        return {
            "backend": encoder.name,
            "source": self.source,
            "precision": encoder.precision,
            "device": encoder.device,
            "weights_sha256": self.weights_sha256,
            "details": {
                **dict(encoder.details),
                "encoder": encoder.source,
                "decoder": self.decoder.source,
                "providers": list(encoder.providers),
            },
        }

    def __repr__(self) -> str:
        return f"Predictor({self.backend}: {self.source}, {self.precision}, {self.device})"


def _suffix_of(backend: str) -> str | None:
    """The pair's file type a backend opens: ``.plan`` (TensorRT) or ``.onnx`` (ONNX Runtime, OpenVINO)."""
    suffixes = backend_class(backend).suffixes
    return next((suffix for suffix in (".plan", ".onnx") if suffix in suffixes), None)


def _describe(source: object) -> str:
    return str(source) if isinstance(source, str | os.PathLike) else type(source).__name__


def _like(device: Any) -> Any:
    if device is None:
        return np.empty(0, np.float32)
    return sys.modules["torch"].empty(0, device=device)


def _nbytes(tensor: Any) -> int:
    """What one embedding tensor holds, whatever it is: numpy, torch, or an ONNX Runtime ``OrtValue``."""
    if isinstance(tensor, np.ndarray):
        return int(tensor.nbytes)
    if is_tensor(tensor):
        return int(tensor.numel() * tensor.element_size())
    itemsize = np.dtype(dtype_name("onnxruntime", tensor.data_type())).itemsize  # an OrtValue
    return int(np.prod(tensor.shape())) * itemsize
