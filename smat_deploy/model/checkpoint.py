"""Loading and saving SMat weights in the official (detectron2) checkpoint format.

Three inputs are accepted:
- the official checkpoint: ``{"model": state_dict, ...}`` with 244 tensors under ``backbone.``,
  ``prompt_cross_attn.`` and ``decoder.``;
- a bare SMat state dict (the same keys, no ``"model"`` wrapper);
- DINOv2 ViT-S/14 backbone-only weights (``dinov2_vits14_pretrain.pth``): the rest is seeded.

Checkpoints are untrusted files: only tensors and plain containers are unpickled
(``torch.load(weights_only=True)``), so a file that would run code when loaded is refused.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import pickletools
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from smat_deploy._files import atomic_output
from smat_deploy.data.synthetic import make_composite
from smat_deploy.errors import SmatError
from smat_deploy.model.batchnorm import recalibrate_batchnorm
from smat_deploy.model.smat import SMat, SMatConfig

#: Keys an official checkpoint may lack without harm (unused at inference).
OPTIONAL_KEYS = frozenset({"backbone.mask_token"})
_SMAT_PREFIXES = ("backbone.", "prompt_cross_attn.", "decoder.")
_MAX_NAMED_KEYS = 6


def build_model(seed: int = 0, config: SMatConfig | None = None) -> SMat:
    """A deterministic, randomly initialised SMat (the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return SMat(config)


def calibration_batches(count: int = 4, size: int = 168) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One batch of synthetic composites (fixed seeds) to estimate BatchNorm statistics of seeded decoders."""
    images = [torch.from_numpy(make_composite((size, size), seed=10_000 + i).image) for i in range(count)]
    batch = torch.stack(images).permute(0, 3, 1, 2).contiguous()
    return [(batch, torch.zeros(count, 1, size, size))]


def read_checkpoint(path: str | os.PathLike[str]) -> dict:
    """Unpickle ``path`` with tensors only; return its top-level object, which must be a dict."""
    path = Path(path)
    if not path.is_file():
        raise SmatError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # torch's notes on pickle protocols are noise to a user
            warnings.simplefilter("ignore", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        imported = _foreign_imports(path)
        if imported:
            raise SmatError(
                f"refusing to load {path}: it holds objects other than tensors and would import "
                f"{', '.join(imported[:3])} when unpickled"
            ) from None
        raise SmatError(f"not a readable PyTorch checkpoint: {path} (corrupt or not a pickle)") from None
    except Exception as err:  # torch raises many types for truncated or foreign files
        raise SmatError(f"not a readable PyTorch checkpoint: {path} ({type(err).__name__})") from None
    if not isinstance(obj, Mapping):
        raise SmatError(f"checkpoint {path} holds a {type(obj).__name__}, expected a dict of tensors")
    return dict(obj)


_SAFE_MODULES = ("torch", "collections", "numpy", "builtins", "_codecs")


def _foreign_imports(path: Path) -> list[str]:
    """Globals a pickle would import outside torch's tensor machinery, found without executing it.

    An empty list means the file is not a parseable pickle (or torch's zip layout) at all.
    """
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                name = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                data = archive.read(name)
        else:
            data = path.read_bytes()
        found, strings = [], []
        for opcode, arg, _ in pickletools.genops(io.BytesIO(data)):
            if isinstance(arg, str):
                strings.append(arg)
            if opcode.name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
    except Exception:  # not a pickle: the caller reports a corrupt file
        return []
    return [g for g in found if not g.startswith(_SAFE_MODULES)]


def _split_checkpoint(obj: dict, path: Path) -> tuple[str, dict[str, torch.Tensor]]:
    """Classify the checkpoint and return (kind, state dict with SMat key names)."""
    if "model" in obj and isinstance(obj["model"], Mapping):
        return "official", dict(obj["model"])
    if any(isinstance(k, str) and k.startswith(_SMAT_PREFIXES) for k in obj):
        return "state_dict", obj
    if "pos_embed" in obj and any(isinstance(k, str) and k.startswith("blocks.") for k in obj):
        return "backbone", {f"backbone.{k}": v for k, v in obj.items()}
    sample = ", ".join(map(str, list(obj)[:3]))
    raise SmatError(f"{path} is not an SMat or DINOv2 checkpoint (top-level keys: {sample}, ...)")


def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_NAMED_KEYS])
    more = len(keys) - _MAX_NAMED_KEYS
    return shown + (f" and {more} more" if more > 0 else "")


def check_state_dict(
    model: SMat, state: Mapping[str, object], *, expected: set[str] | None = None, source: str = "checkpoint"
) -> None:
    """Raise one :class:`SmatError` naming every missing, unexpected or mis-shaped key."""
    own = model.state_dict()
    expected = set(own) if expected is None else expected
    missing = sorted(expected - set(state) - OPTIONAL_KEYS)
    unexpected = sorted(str(k) for k in set(state) - set(own))
    misshaped = sorted(
        f"{k} {list(v.shape)} (expected {list(own[k].shape)})"
        for k, v in state.items()
        if k in own and (not isinstance(v, torch.Tensor) or v.shape != own[k].shape)
    )
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} key(s): {_names(missing)}")
    if unexpected:
        problems.append(f"unexpected {len(unexpected)} key(s): {_names(unexpected)}")
    if misshaped:
        problems.append(f"mis-shaped {len(misshaped)} key(s): {_names(misshaped)}")
    if problems:
        raise SmatError(f"{source} does not match SMat: " + "; ".join(problems))


def load_state(model: SMat, path: str | os.PathLike[str]) -> str:
    """Load weights from ``path`` into ``model``; return the checkpoint kind that was found."""
    path = Path(path)
    kind, state = _split_checkpoint(read_checkpoint(path), path)
    own = model.state_dict()
    expected = {k for k in own if k.startswith("backbone.")} if kind == "backbone" else None
    check_state_dict(model, state, expected=expected, source=str(path))
    # Strictness is enforced above (with the documented optional keys), so load non-strictly.
    model.load_state_dict(state, strict=False)
    if kind == "backbone":
        warnings.warn(
            f"{path} holds DINOv2 backbone weights only: the prompt attention and decoder are seeded, "
            "so the alpha is not a trained matte",
            stacklevel=2,
        )
    return kind


def describe_weights(checkpoint: str | os.PathLike[str] | None, seed: int = 0) -> str:
    """One line saying which weights :func:`load_model` uses, so no output hides untrained weights."""
    if checkpoint is None:
        return f"built-in default: seed {seed}, BatchNorm recalibrated on synthetic composites (NOT trained)"
    return str(checkpoint)


def load_model(checkpoint: str | os.PathLike[str] | None = None, *, seed: int = 0) -> SMat:
    """SMat in eval mode: built-in default weights when ``checkpoint`` is None, else loaded from it.

    The built-in default is deterministic: weights seeded with ``seed``, then BatchNorm statistics
    estimated on four synthetic composites (:func:`recalibrate_batchnorm`). Without that step a seeded
    model's alpha is almost constant and no numerical comparison against it means anything. A
    backbone-only checkpoint gets the same treatment for the seeded decoder.
    """
    model = build_model(seed)
    kind = "seeded" if checkpoint is None else load_state(model, checkpoint)
    if kind in ("seeded", "backbone"):
        recalibrate_batchnorm(model, calibration_batches())
    return model.eval()


def save_checkpoint(model: SMat, path: str | os.PathLike[str], **extra: object) -> Path:
    """Write ``{"model": state_dict, **extra}`` (the official format) atomically to ``path``."""
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    with atomic_output(path) as tmp:
        torch.save({"model": state, **extra}, tmp)
    return Path(path)


def weights_digest(model: SMat) -> str:
    """SHA-256 over the model's parameters and buffers (names, dtypes, shapes, bytes): equal iff the weights are.

    Manifests record it, so two files exported from the same weights (the interactive pair) can be
    matched, whatever checkpoint file or seed the weights came from.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        data = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{data.dtype}:{tuple(data.shape)};".encode())
        digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
