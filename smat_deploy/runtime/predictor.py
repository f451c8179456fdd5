"""Interactive matting: embed a photo once, answer every prompt from the embedding (:class:`Predictor`).

SMat's backbone and ConvStream never see the prompt, so a click only needs the decoder: the
candidate token, the prompt cross-attention, the similarity map and the fusion stages. Two engines
do the work:

- ONNX Runtime on the exported pair (``smat-deploy export --interactive``): ``smat_encoder.onnx``
  and ``smat_decoder.onnx`` (or a precision's pair, such as ``smat_encoder_cpu.onnx``). Their
  manifests must name each other and carry the same ``weights_sha256``; no PyTorch is needed.
- PyTorch on the reference model (``"torch"``, a checkpoint, or an ``SMat`` module):
  :meth:`SMat.embed` and :meth:`SMat.decode`, which equal the whole forward exactly.

Embeddings stay where they were made (numpy on the CPU, torch tensors on their device, ONNX
Runtime values on the GPU), are never modified, and may be used from several threads at once.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smat_deploy.contract import EMBEDDING_NAMES, canonical_precision, padded_grid, pair_file, read_manifest
from smat_deploy.errors import SmatError
from smat_deploy.runtime.devices import is_tensor, parse_device
from smat_deploy.runtime.inputs import prepare_image, prepare_prompt_for, prepare_state, restore
from smat_deploy.runtime.memory import PAIR_PROFILES, MemoryEstimate, MemoryProfile, pair_estimate
from smat_deploy.runtime.sizing import Budget, MemoryGate, Rescale, SizePlan, SizePolicy, Sizing, resolve_budget


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
    #: Identifies the weights (and engine) that made it: only a predictor with the same key decodes it.
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


class _Engine:
    """What :class:`Predictor` needs of an engine: embed a contract image, decode a contract prompt."""

    backend: str
    precision: str
    device: str
    model_key: str
    source: str
    details: dict
    memory_profile: MemoryProfile

    def embed(self, image: Any) -> dict[str, Any]:
        raise NotImplementedError

    def decode(self, tensors: Mapping[str, Any], prompt: Any, state: Any) -> Any:
        raise NotImplementedError


class _OrtPair(_Engine):
    backend = "onnxruntime"

    def __init__(
        self, encoder: Path, decoder: Path, device: str, threads: int | None, release_memory: bool = True
    ) -> None:
        import onnxruntime as ort

        from smat_deploy._ort import session_options
        from smat_deploy.runtime.base import profile_for_onnx
        from smat_deploy.runtime.onnxrt import resolve_providers

        manifests = {role: _pair_manifest(path, role) for role, path in (("encoder", encoder), ("decoder", decoder))}
        keys = {role: m["pair"].get("weights_sha256") for role, m in manifests.items()}
        if keys["encoder"] != keys["decoder"] or not keys["encoder"]:
            raise SmatError(
                f"{encoder.name} and {decoder.name} were exported from different weights "
                f"(weights_sha256 {str(keys['encoder'])[:12]} vs {str(keys['decoder'])[:12]}): "
                "export both again with smat-deploy export --interactive"
            )
        precisions = {canonical_precision(str(m.get("precision", "float32"))) for m in manifests.values()}
        self.precision = "+".join(sorted(precisions))
        requested, required, _ = resolve_providers(device, None)
        sessions = {}
        for role, path in (("encoder", encoder), ("decoder", decoder)):
            options = session_options(manifests[role].get("precision"), threads)
            try:
                sessions[role] = ort.InferenceSession(str(path), options, providers=requested)
            except Exception as err:  # ORT raises its own exception types for unreadable or invalid models
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise SmatError(f"ONNX Runtime cannot load {path}: {first}") from None
            if missing := [p for p in required if p not in sessions[role].get_providers()]:
                raise SmatError(
                    f"{', '.join(missing)} was requested but did not load for {path.name}; use device='cpu'"
                )
        self.encoder, self.decoder = sessions["encoder"], sessions["decoder"]
        _check_io(self.encoder, ["image"], list(EMBEDDING_NAMES), encoder)
        _check_io(self.decoder, [*EMBEDDING_NAMES, "prompt", "state"], ["alpha"], decoder)
        active = self.encoder.get_providers()
        self.cuda_index = None
        if "CUDAExecutionProvider" in active:
            options = self.encoder.get_provider_options().get("CUDAExecutionProvider", {})
            self.cuda_index = int(options.get("device_id", 0))
        self.device = "cpu" if self.cuda_index is None else f"cuda:{self.cuda_index}"
        # The encoder's working memory (attention matrices: GBs at 1560x1040) is held by ONNX Runtime's arena
        # between calls unless it is shrunk after each run; a click never needs it.
        self.encoder_run = ort.RunOptions()
        if release_memory:
            arena = "cpu:0" if self.cuda_index is None else f"cpu:0;gpu:{self.cuda_index}"
            self.encoder_run.add_run_config_entry("memory.enable_memory_arena_shrinkage", arena)
        self.model_key = f"{keys['encoder']}:onnxruntime:{self.precision}"
        self.memory_profile = profile_for_onnx(encoder, "onnxruntime", pair=True)
        self.source = str(encoder.parent)
        self.details = {
            "encoder": str(encoder),
            "decoder": str(decoder),
            "providers": active,
            "threads": threads,
            "release_memory": release_memory,
        }

    def embed(self, image: Any) -> dict[str, Any]:
        if self.cuda_index is None:
            return dict(
                zip(EMBEDDING_NAMES, self.encoder.run(list(EMBEDDING_NAMES), {"image": _host(image)}), strict=True)
            )
        # On the GPU the embedding stays there: ONNX Runtime allocates it on the device and keeps it as OrtValues.
        binding = self.encoder.io_binding()
        binding.bind_cpu_input("image", _host(image))
        for name in EMBEDDING_NAMES:
            binding.bind_output(name, "cuda", self.cuda_index)
        self.encoder.run_with_iobinding(binding, self.encoder_run)
        return dict(zip(EMBEDDING_NAMES, binding.get_outputs(), strict=True))

    def decode(self, tensors: Mapping[str, Any], prompt: Any, state: Any) -> Any:
        if self.cuda_index is None:
            feed = {name: tensors[name] for name in EMBEDDING_NAMES} | {"prompt": _host(prompt), "state": _host(state)}
            return self.decoder.run(["alpha"], feed)[0]
        binding = self.decoder.io_binding()
        for name in EMBEDDING_NAMES:
            binding.bind_ortvalue_input(name, tensors[name])
        binding.bind_cpu_input("prompt", _host(prompt))
        binding.bind_cpu_input("state", _host(state))
        binding.bind_output("alpha", "cpu")
        self.decoder.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]


class _TorchPair(_Engine):
    backend = "torch"

    def __init__(self, source: object, device: str, threads: int | None, seed: int) -> None:
        import torch

        from smat_deploy.model import SMat, describe_weights, load_model, weights_digest
        from smat_deploy.runtime.devices import torch_device

        target = torch_device(device)
        if threads:
            torch.set_num_threads(threads)
        if isinstance(source, SMat):
            model, weights, self.source = source, "the given SMat module", "SMat module"
        else:
            checkpoint = None if source == "torch" else os.fspath(source)  # type: ignore[arg-type]
            model = load_model(checkpoint, seed=seed)
            weights, self.source = describe_weights(checkpoint, seed), str(source)
        self.model = model.to(target).eval()
        self.device = str(target)
        self.precision = str(next(self.model.parameters()).dtype).removeprefix("torch.")
        self.model_key = f"{weights_digest(self.model)}:torch:{self.precision}"
        self.memory_profile = PAIR_PROFILES["torch"]
        self.details = {"weights": weights, "threads": torch.get_num_threads()}

    def embed(self, image: Any) -> dict[str, Any]:
        import torch

        image = _torch_on(image, self.device)
        from smat_deploy.model import Embedding

        with torch.inference_mode():
            embedding = self.model.embed(image)
        return dict(zip(Embedding.TENSORS, embedding.tensors(), strict=True))

    def decode(self, tensors: Mapping[str, Any], prompt: Any, state: Any) -> Any:
        import torch

        from smat_deploy.model import Embedding

        prompt, state = _torch_on(prompt, self.device), _torch_on(state, self.device)
        height, width = prompt.shape[-2:]
        embedding = Embedding(**{name: tensors[name] for name in Embedding.TENSORS}, height=height, width=width)
        with torch.inference_mode():
            return self.model.decode(embedding, prompt, state)


class Predictor:
    """Embed once, predict per prompt::

        predictor = Predictor.open("export/")            # the pair from `smat-deploy export --interactive`
        embedding = predictor.embed(image)               # HxWx3 uint8/float, or Bx3xHxW; numpy or torch
        alpha = predictor.predict(embedding, prompt)     # what Runtime returns for the same inputs

    ``source``: a folder holding the pair (``precision`` picks the files: ``float32`` is
    ``smat_encoder.onnx`` + ``smat_decoder.onnx``, ``cpu`` the ``_cpu`` pair, ...), a pair's encoder
    file, ``"torch"`` (the built-in weights), a ``.pth``/``.pt`` checkpoint or an ``SMat`` module.
    ``device``: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``. ``release_memory`` (ONNX Runtime): give the
    encoder's working memory back after each :meth:`embed` (about half the peak, and nothing held between
    clicks, for about 20 % more embed time at 768x1024); False keeps ONNX Runtime's arena.
    ``size_policy``: as for :meth:`Runtime.open <smat_deploy.runtime.Runtime.open>` (None: every photo is
    embedded at its own size); with one, a photo too large for the budget is embedded scaled down and every
    alpha comes back at the photo's size by guided upsampling. Safe to use from several threads at once.
    """

    def __init__(self, engine: _Engine, sizing: Sizing | None = None) -> None:
        self.engine = engine
        self.sizing = sizing

    @classmethod
    def open(
        cls,
        source: object,
        device: str = "auto",
        *,
        precision: str = "float32",
        threads: int | None = None,
        seed: int = 0,
        release_memory: bool = True,
        size_policy: SizePolicy | str | bool | None = None,
        reserved_mb: float = 0.0,
    ) -> Predictor:
        from smat_deploy.runtime.wrapper import as_size_policy

        parse_device(device)
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise SmatError(f"threads must be a positive integer, got {threads!r}")
        policy = as_size_policy(size_policy)
        torch_module = sys.modules.get("smat_deploy.model.smat")
        if source == "torch" or (torch_module is not None and isinstance(source, torch_module.SMat)):
            engine: _Engine = _TorchPair(source, device, threads, seed)
        elif not isinstance(source, str | os.PathLike):
            raise SmatError(f"Predictor source must be a folder, a file or 'torch', got {type(source).__name__}")
        elif Path(source).suffix.lower() in (".pth", ".pt"):
            if not Path(source).is_file():
                raise SmatError(f"checkpoint not found: {source}")
            engine = _TorchPair(Path(source), device, threads, seed)
        else:
            encoder, decoder = _pair_paths(Path(source), precision)
            engine = _OrtPair(encoder, decoder, device, threads, release_memory)
        predictor = cls(engine)
        if policy is not None:
            predictor.use_size_policy(policy, resolve_budget(policy, engine.device, reserved_mb))
        return predictor

    def use_size_policy(
        self, policy: SizePolicy | None, budget: Budget | None = None, gate: MemoryGate | None = None
    ) -> None:
        """Embed photos under ``policy`` from now on (None: at their own size); ``budget`` (measured now when
        None) and ``gate`` may be shared with a :class:`~smat_deploy.runtime.Runtime` drawing on the same memory."""
        if policy is None:
            self.sizing = None
            return
        profile = self.engine.memory_profile

        def estimate(batch: int, height: int, width: int) -> MemoryEstimate:
            return pair_estimate(profile, batch, height, width)

        budget = budget if budget is not None else resolve_budget(policy, self.engine.device)
        self.sizing = Sizing(policy, budget, estimate, gate=gate)  # type: ignore[arg-type]

    @property
    def backend(self) -> str:
        return self.engine.backend

    @property
    def device(self) -> str:
        return self.engine.device

    @property
    def precision(self) -> str:
        return self.engine.precision

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
            tensors = self.engine.embed(batch_image)
        else:
            plan = self.sizing.plan(batch, height, width)
            if self.sizing.chunk(plan) < batch:
                raise SmatError(
                    f"{batch} photos of {width}x{height} do not fit the memory budget at once "
                    f"({plan.predicted_mb:,.0f} MB for one): embed fewer at a time"
                )
            with self.sizing.gate.reserve(plan.predicted_mb):
                if plan.scaled:  # scaled on the host; a full-size photo stays where the caller put it
                    rescale = Rescale(plan, _host(batch_image)).prepare()  # the guide once, not per click
                    tensors = self.engine.embed(rescale.image)
                else:
                    tensors = self.engine.embed(batch_image)
        run_height, run_width = (height, width) if rescale is None else rescale.image.shape[2:]
        return PhotoEmbedding(
            tensors=tensors,
            batch=batch,
            height=height,
            width=width,
            device=self.engine.device,
            model_key=self.engine.model_key,
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
        if embedding.model_key != self.engine.model_key:
            theirs, ours = embedding.model_key, self.engine.model_key
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
            alpha = self.engine.decode(embedding.tensors, batch_prompt, batch_state)
        else:
            small = self.engine.decode(embedding.tensors, rescale.prompt(_host(batch_prompt)), batch_state)
            alpha = rescale.alpha(_host(small))
        return restore(alpha, embedding.caller_device, embedding.single)

    def __call__(self, image: object, prompt: object = None, state: object = None) -> Any:
        """Embed and predict in one call (the whole model's answer, through the pair)."""
        return self.predict(self.embed(image), prompt, state)

    @property
    def info(self) -> dict:
        engine = self.engine
        return {
            "backend": engine.backend,
            "source": engine.source,
            "precision": engine.precision,
            "device": engine.device,
            "weights_sha256": engine.model_key.split(":", 1)[0],
            "details": dict(engine.details),
        }

    def __repr__(self) -> str:
        return f"Predictor({self.engine.backend}: {self.engine.source}, {self.engine.precision}, {self.engine.device})"


def _pair_paths(path: Path, precision: str) -> tuple[Path, Path]:
    precision = canonical_precision(precision)
    if path.is_dir():
        try:
            names = pair_file("encoder", precision), pair_file("decoder", precision)
        except KeyError:
            raise SmatError(f"unknown precision {precision!r}") from None
        encoder, decoder = path / names[0], path / names[1]
        missing = [p.name for p in (encoder, decoder) if not p.is_file()]
        if missing:
            raise SmatError(
                f"{path} has no {' or '.join(missing)}: make the pair with smat-deploy export --interactive -o {path}"
            )
        return encoder, decoder
    if not path.is_file():
        raise SmatError(f"no such folder or file: {path}")
    manifest = _pair_manifest(path, None)
    if manifest["pair"].get("role") != "encoder":
        raise SmatError(f"{path.name} is the pair's {manifest['pair'].get('role')}: open its encoder or its folder")
    decoder = path.parent / str(manifest["pair"].get("partner"))
    if not decoder.is_file():
        raise SmatError(f"{path.name}'s decoder {decoder.name} is not beside it")
    return path, decoder


def _pair_manifest(path: Path, role: str | None) -> dict:
    try:
        manifest = read_manifest(path.with_suffix(".json"))
    except ValueError as err:
        raise SmatError(f"{path.with_suffix('.json')} is not valid JSON: {err}") from None
    if manifest is None:
        raise SmatError(f"{path.name} has no manifest ({path.with_suffix('.json').name}): the pair cannot be verified")
    pair = manifest.get("pair")
    if not isinstance(pair, dict) or (role is not None and pair.get("role") != role):
        raise SmatError(f"{path.name} is not the {role or 'encoder'} of an interactive pair (see its manifest)")
    return manifest


def _check_io(session: Any, inputs: list[str], outputs: list[str], path: Path) -> None:
    have_in = [i.name for i in session.get_inputs()]
    have_out = [o.name for o in session.get_outputs()]
    if sorted(have_in) != sorted(inputs) or sorted(have_out) != sorted(outputs):
        raise SmatError(f"{path.name} takes {have_in} -> {have_out}, expected {inputs} -> {outputs}")


def _host(array: Any) -> np.ndarray:
    return array.detach().cpu().numpy() if is_tensor(array) else np.ascontiguousarray(array)


def _torch_on(array: Any, device: str) -> Any:
    import torch

    if not is_tensor(array):
        array = np.ascontiguousarray(array)
        tensor = torch.from_numpy(array if array.flags.writeable else array.copy())
    else:
        tensor = array
    return tensor.to(device)


def _like(device: Any) -> Any:
    if device is None:
        return np.empty(0, np.float32)
    return sys.modules["torch"].empty(0, device=device)


def _nbytes(tensor: Any) -> int:
    if isinstance(tensor, np.ndarray):
        return int(tensor.nbytes)
    if is_tensor(tensor):
        return int(tensor.numel() * tensor.element_size())
    shape = tensor.shape()  # an ONNX Runtime OrtValue
    return int(np.prod(shape)) * 4
