"""What callers hand the runtime, turned into the contract's tensors, and the alpha turned back.

Accepted images: one photo ``HxWx3`` (uint8 0..255, or float in [0, 1]) or a batch ``Bx3xHxW``,
as numpy arrays or torch tensors on any device. Prompts: ``None`` (automatic), a mask (``HxW`` for
every sample, or ``Bx1xHxW``; bool/integer masks mark their non-zero pixels), or prompt objects: the
JSON dicts of a prompt file (``{"type": "point", "x": .., "y": ..}``) or :mod:`smat_deploy.prompts`
objects, one list for all samples or one list per sample. The alpha comes back as the caller's kind
(numpy in, numpy out; a torch tensor on the input's device) and, for a single photo, as ``HxW``.

Tensors stay where they are: a CUDA image is converted on its own device, so no host copy happens
on the way in.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from smat_deploy import prompts as P
from smat_deploy.contract import MIN_SIDE
from smat_deploy.errors import SmatError
from smat_deploy.runtime.base import Array
from smat_deploy.runtime.devices import is_tensor

_PROMPT_TYPES = (Mapping, P.Point, P.Box, P.Scribble, P.Mask)


def _torch() -> Any:
    """The torch module, only ever asked for when the caller passed a tensor (so it is already imported)."""
    return sys.modules["torch"]


@dataclass(frozen=True)
class Prepared:
    """Contract-shaped inputs plus what is needed to give the alpha back in the caller's form."""

    image: Array
    prompt: Array
    state: Array
    single: bool
    device: Any  # a torch.device; None: the caller gave numpy

    @property
    def shape(self) -> tuple[int, int, int]:
        batch, _, height, width = self.image.shape
        return int(batch), int(height), int(width)


def _describe(value: object) -> str:
    if isinstance(value, np.ndarray) or is_tensor(value):
        return f"{type(value).__module__.split('.')[0]} {value.dtype} of shape {list(value.shape)}"
    return type(value).__name__


def _is_float(array: Array) -> bool:
    if is_tensor(array):
        return array.is_floating_point()
    return bool(np.issubdtype(array.dtype, np.floating))


def _is_bool(array: Array) -> bool:
    return array.dtype == _torch().bool if is_tensor(array) else array.dtype == np.bool_


def _as_float(array: Array, what: str) -> Array:
    """uint8 -> [0, 1]; bool -> 0/1; floats -> float32 checked to lie in [0, 1]; anything else is refused."""
    if is_tensor(array):
        torch = _torch()
        if array.dtype == torch.uint8:
            return array.to(torch.float32).div_(255.0)
        if array.dtype == torch.bool:
            return array.to(torch.float32)
        if not array.is_floating_point():
            raise SmatError(f"{what} must be uint8 or float, got {array.dtype}")
        array = array.to(torch.float32)
        low, high = (float(v) for v in torch.aminmax(array))
    else:
        if array.dtype == np.uint8:
            return np.ascontiguousarray(array, dtype=np.float32) / np.float32(255.0)
        if array.dtype == np.bool_:
            return array.astype(np.float32)
        if not np.issubdtype(array.dtype, np.floating):
            raise SmatError(f"{what} must be uint8 or float, got {array.dtype}")
        array = array.astype(np.float32, copy=False)
        low, high = float(array.min()), float(array.max())
    if not (low >= 0.0 and high <= 1.0):  # also catches NaN
        raise SmatError(f"{what} values must lie in [0, 1] (uint8 for 0..255), got {low:g}..{high:g}")
    return array


def _contiguous(array: Array) -> Array:
    return array.contiguous() if is_tensor(array) else np.ascontiguousarray(array)


def _to_kind(array: Array, like: Array) -> Array:
    """``array`` as the same kind (numpy, or torch on the same device) as ``like``."""
    if is_tensor(like):
        tensor = _torch().from_numpy(np.ascontiguousarray(array)) if isinstance(array, np.ndarray) else array
        return tensor.to(like.device)
    return array.detach().cpu().numpy() if is_tensor(array) else array


def prepare_image(image: object) -> tuple[Array, bool]:
    """``(image [B,3,H,W] float32 contiguous, single)``."""
    if not (isinstance(image, np.ndarray) or is_tensor(image)):
        raise SmatError(f"image must be a numpy array or a torch tensor, got {_describe(image)}")
    if image.ndim == 3:
        if image.shape[-1] != 3:
            raise SmatError(f"a single image must be HxWx3 (RGB, channels last), got {_describe(image)}")
        single = True
        image = image.permute(2, 0, 1)[None] if is_tensor(image) else image.transpose(2, 0, 1)[None]
    elif image.ndim == 4:
        if image.shape[1] != 3:
            raise SmatError(f"a batch must be Bx3xHxW (RGB, channels first), got {_describe(image)}")
        single = False
    else:
        raise SmatError(f"image must be HxWx3 (one photo) or Bx3xHxW (a batch), got {_describe(image)}")
    batch, _, height, width = image.shape
    if batch < 1:
        raise SmatError("the batch is empty")
    if height < MIN_SIDE or width < MIN_SIDE:
        raise SmatError(f"image must be at least {MIN_SIDE}x{MIN_SIDE} pixels, got {width}x{height} (WxH)")
    return _contiguous(_as_float(image, "image")), single


def _is_prompt_objects(prompt: object) -> bool:
    if isinstance(prompt, _PROMPT_TYPES):
        return True
    if isinstance(prompt, Sequence) and not isinstance(prompt, str | bytes):
        return all(isinstance(item, _PROMPT_TYPES) or _is_prompt_objects(item) for item in prompt)
    return False


def _parse(items: Sequence[object] | object, where: str) -> list[P.Prompt]:
    items = items if isinstance(items, Sequence) else [items]
    parsed = []
    for index, item in enumerate(items):
        if isinstance(item, Mapping):
            parsed.append(P.parse_prompt(dict(item), f"{where}[{index}]"))
        elif isinstance(item, P.Point | P.Box | P.Scribble | P.Mask):
            parsed.append(item)
        else:
            raise SmatError(f"{where}[{index}] is a {type(item).__name__}, expected a prompt object")
    return parsed


def rasterize_prompt_objects(prompt: object, batch: int, height: int, width: int) -> np.ndarray:
    """Prompt objects -> ``[B,1,H,W]`` mask: one list for every sample, or (for a batch) one list per sample."""
    per_sample = (
        batch > 1
        and isinstance(prompt, Sequence)
        and len(prompt) == batch
        and all(isinstance(item, Sequence) and not isinstance(item, Mapping) for item in prompt)
    )
    lists = list(prompt) if per_sample else [prompt] * batch  # type: ignore[arg-type]
    masks = [
        P.rasterize(_parse(items, f"prompt{f'[{i}]' if per_sample else ''}"), (height, width))
        for i, items in enumerate(lists)
    ]
    return np.stack(masks)[:, None]


def prepare_prompt(prompt: object, image: Array) -> Array:
    """``prompt [B,1,H,W]`` float32 of the image's kind and device."""
    batch, _, height, width = image.shape
    return prepare_prompt_for(prompt, (int(batch), int(height), int(width)), image)


def prepare_prompt_for(prompt: object, shape: tuple[int, int, int], like: Array) -> Array:
    """``prompt [B,1,H,W]`` float32 for a ``(B, H, W)`` photo batch, of the kind and device of ``like``."""
    batch, height, width = shape
    image = like
    if prompt is None:
        if is_tensor(image):
            return _torch().zeros((batch, 1, height, width), dtype=_torch().float32, device=image.device)
        return np.zeros((batch, 1, height, width), dtype=np.float32)
    if _is_prompt_objects(prompt):
        return _to_kind(rasterize_prompt_objects(prompt, batch, height, width), image)
    if not (isinstance(prompt, np.ndarray) or is_tensor(prompt)):
        raise SmatError(f"prompt must be a mask, prompt objects or None, got {_describe(prompt)}")
    if prompt.ndim == 2 and tuple(prompt.shape) != (height, width):
        raise SmatError(f"prompt mask is {prompt.shape[1]}x{prompt.shape[0]} but the image is {width}x{height} (WxH)")
    if prompt.ndim == 4 and tuple(prompt.shape) != (batch, 1, height, width):
        raise SmatError(f"prompt mask must be Bx1xHxW = {[batch, 1, height, width]}, got {list(prompt.shape)}")
    if prompt.ndim not in (2, 4):
        raise SmatError(f"prompt mask must be HxW or Bx1xHxW, got {_describe(prompt)}")
    if not _is_float(prompt) and not _is_bool(prompt):
        prompt = prompt != 0  # integer masks (0/255 images) mark their non-zero pixels
    mask = _as_float(_to_kind(prompt, image), "prompt")
    if mask.ndim == 2:
        mask = (
            mask[None, None].expand(batch, 1, height, width)
            if is_tensor(mask)
            else (np.broadcast_to(mask[None, None], (batch, 1, height, width)))
        )
    return _contiguous(mask)


def _state_values(state: object, batch: int, like: Array) -> Array:
    if isinstance(state, bool | int | float):
        values: Array = np.full((batch, 1), float(state), dtype=np.float32)
    elif (isinstance(state, np.ndarray) or is_tensor(state)) and math.prod(state.shape) == batch:
        values = state.reshape(batch, 1)
    else:
        raise SmatError(f"state must be 0, 1 or one value per sample ({batch}), got {_describe(state)}")
    values = _to_kind(values, like)
    return values.to(_torch().float32) if is_tensor(values) else values.astype(np.float32)


def prepare_state(state: object, prompt: Array) -> Array:
    """``state [B,1]`` float32: derived from the prompt when None, else checked against it."""
    batch = prompt.shape[0]
    is_torch = is_tensor(prompt)
    marked = (prompt != 0).reshape(batch, -1).any(1)
    if state is None:
        derived = marked.reshape(batch, 1)
        return derived.to(_torch().float32) if is_torch else derived.astype(np.float32)
    values = _state_values(state, batch, prompt)
    if not bool(((values == 0) | (values == 1)).all()):
        raise SmatError("state must be 0 (automatic) or 1 (interactive)")
    empty = (values[:, 0] == 1) & ~marked
    if bool(empty.any()):
        indices = _torch().nonzero(empty).flatten().tolist() if is_torch else np.flatnonzero(empty).tolist()
        raise SmatError(
            f"interactive state with an empty prompt (sample {', '.join(map(str, indices))}): "
            "mark at least one pixel or use state 0"
        )
    return _contiguous(values)


def prepare_inputs(image: object, prompt: object = None, state: object = None) -> Prepared:
    """Everything :meth:`Runtime.__call__` accepts -> contract-shaped float32 inputs of the image's kind."""
    batch_image, single = prepare_image(image)
    batch_prompt = prepare_prompt(prompt, batch_image)
    batch_state = prepare_state(state, batch_prompt)
    device = batch_image.device if is_tensor(batch_image) else None
    return Prepared(batch_image, batch_prompt, batch_state, single, device)


def restore_output(alpha: Array, prepared: Prepared) -> Array:
    """The backend's ``alpha [B,1,H,W]`` as the caller's kind, ``HxW`` for a single photo."""
    return restore(alpha, prepared.device, prepared.single)


def restore(alpha: Array, device: Any, single: bool) -> Array:
    """``alpha [B,1,H,W]`` as numpy (``device`` None) or a torch tensor on ``device``; ``HxW`` when ``single``."""
    if device is None:
        alpha = alpha.detach().cpu().numpy() if is_tensor(alpha) else np.asarray(alpha)
    else:
        alpha = _torch().from_numpy(alpha) if isinstance(alpha, np.ndarray) else alpha
        alpha = alpha.to(device)
    return alpha[0, 0] if single else alpha
