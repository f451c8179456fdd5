"""Photos on disk to alpha files with any :class:`~smat_deploy.runtime.Runtime`: one photo, or a folder.

Prompts are given in the original photo's pixels and rasterised there; when the photo is capped
(``max_side``, as the official scripts do for very large inputs) the mask follows it with nearest
interpolation and the alpha is resized back the same way.

A folder run mattes every photo in the folder (not its subfolders). A photo's prompts come from a
prompt file with the same stem beside it (``dog.jpg`` -> ``dog.json``, the format of ``--prompt``);
photos without one are matted automatically. A photo that cannot be read or matted is skipped and
reported; the others still finish.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from smat_deploy import images
from smat_deploy import prompts as P
from smat_deploy._files import prepare_folder
from smat_deploy.errors import SmatError
from smat_deploy.images import PHOTO_SUFFIXES
from smat_deploy.runtime import Predictor, Runtime
from smat_deploy.runtime.predictor import PhotoEmbedding

#: Photo formats a folder run picks up (case-insensitive).


@dataclass(frozen=True)
class Matte:
    alpha: np.ndarray  # float32 HxW at the photo's size
    interactive: bool
    seconds: float  # the runtime call alone


def working_photo(photo: np.ndarray, max_side: int | None) -> np.ndarray:
    """The photo the engine sees: ``photo`` itself, or scaled down to ``max_side`` (:func:`images.cap_long_side`)."""
    return photo if max_side is None else images.cap_long_side(photo, max_side)


def prompt_mask(
    prompts: list[P.Prompt], photo_size: tuple[int, int], working_size: tuple[int, int], interactive: bool | None
) -> np.ndarray:
    """The prompts rasterised at the photo's size (their coordinates' frame), then at the working size."""
    mask = P.rasterize(prompts, photo_size)
    if tuple(working_size) != tuple(photo_size):
        mask = images.resize_alpha_nearest(mask, working_size)
    if interactive and not mask.any():
        raise SmatError("interactive mode needs a prompt that marks at least one pixel")
    return mask


def _state(interactive: bool | None) -> float | None:
    return None if interactive is None else float(interactive)


def _matte(alpha: object, mask: np.ndarray, interactive: bool | None, photo_size: tuple, seconds: float) -> Matte:
    alpha = images.resize_alpha_nearest(np.asarray(alpha), photo_size)
    return Matte(alpha, bool(mask.any()) if interactive is None else interactive, seconds)


def matte_photo(
    runtime: Runtime,
    photo: np.ndarray,
    prompts: list[P.Prompt],
    interactive: bool | None = None,
    max_side: int | None = None,
) -> Matte:
    """``photo`` float32 ``HxWx3`` -> alpha at its size.

    ``interactive`` None: interactive exactly when a prompt marks a pixel; False forces automatic.
    """
    working = working_photo(photo, max_side)
    mask = prompt_mask(prompts, photo.shape[:2], working.shape[:2], interactive)
    start = time.perf_counter()
    alpha = runtime(working, mask, _state(interactive))
    return _matte(alpha, mask, interactive, photo.shape[:2], time.perf_counter() - start)


def decode_prompts(
    predictor: Predictor,
    embedding: PhotoEmbedding,
    prompts: list[P.Prompt],
    photo_size: tuple[int, int],
    interactive: bool | None = None,
) -> Matte:
    """One prompt set on a photo embedded at its working size -> alpha at the photo's size (as :func:`matte_photo`).

    ``photo_size`` (height, width) is the photo's own size, the frame of the prompts' coordinates.
    """
    mask = prompt_mask(prompts, photo_size, (embedding.height, embedding.width), interactive)
    return _decode_mask(predictor, embedding, mask, photo_size, interactive)


def _decode_mask(
    predictor: Predictor, embedding: PhotoEmbedding, mask: np.ndarray, photo_size: tuple, interactive: bool | None
) -> Matte:
    start = time.perf_counter()
    alpha = predictor.predict(embedding, mask, _state(interactive))
    return _matte(alpha, mask, interactive, photo_size, time.perf_counter() - start)


@dataclass(frozen=True)
class PromptSetMattes:
    """One photo, several prompt sets: the embedding was made once, then one decoder run per set."""

    mattes: list[Matte]
    embed_seconds: float
    embedding_bytes: int


def matte_prompt_sets(
    predictor: Predictor,
    photo: np.ndarray,
    prompt_sets: list[list[P.Prompt]],
    interactive: bool | None = None,
    max_side: int | None = None,
) -> PromptSetMattes:
    """``photo`` float32 ``HxWx3`` and several prompt lists -> one alpha per list, from one embedding.

    Each set is handled as :func:`matte_photo` handles its prompts (rasterised at the photo's size,
    following a ``max_side`` cap); ``Matte.seconds`` is that set's decoder call alone.
    """
    working = working_photo(photo, max_side)
    masks = [prompt_mask(prompts, photo.shape[:2], working.shape[:2], None) for prompts in prompt_sets]
    if interactive and not all(mask.any() for mask in masks):  # every set is checked before the encoder runs
        raise SmatError("interactive mode needs a prompt that marks at least one pixel in every prompt set")
    start = time.perf_counter()
    embedding = predictor.embed(working)
    embed_seconds = time.perf_counter() - start
    mattes = [_decode_mask(predictor, embedding, mask, photo.shape[:2], interactive) for mask in masks]
    return PromptSetMattes(mattes, embed_seconds, embedding.nbytes)


def list_photos(folder: str | os.PathLike[str]) -> list[Path]:
    """The photos directly in ``folder`` (hidden files excluded), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SmatError(f"not a folder: {folder}")
    photos = sorted(
        p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in PHOTO_SUFFIXES
    )
    if not photos:
        raise SmatError(f"no photos in {folder} (looked for {', '.join(PHOTO_SUFFIXES)})")
    return photos


def output_paths(photos: list[Path], out_dir: Path, suffix: str = ".png") -> dict[Path, Path]:
    """``out_dir/<stem><suffix>`` per photo; two photos with one stem would overwrite each other, so that is refused."""
    outputs: dict[Path, Path] = {}
    seen: dict[Path, Path] = {}
    for photo in photos:
        target = out_dir / f"{photo.stem}{suffix}"
        if target in seen:
            raise SmatError(f"{seen[target].name} and {photo.name} would both be written to {target}; rename one")
        seen[target], outputs[photo] = photo, target
    return outputs


def prepare_output_folder(out_dir: Path, photo_folder: Path, what: str) -> Path:
    """Create ``out_dir`` if needed; refuse the photo folder itself (an alpha could replace a photo)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise SmatError(f"{what} must be a folder in folder mode, but {out_dir} is a file")
    if out_dir.resolve() == photo_folder.resolve():
        raise SmatError(f"{what} must differ from the photo folder {photo_folder}: alphas could replace photos")
    return prepare_folder(out_dir, what)


@dataclass
class FolderReport:
    done: list[dict] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)


def matte_folder(
    runtime: Runtime,
    photos: Iterable[Path],
    out_dir: Path,
    *,
    cutout_dir: Path | None = None,
    interactive: bool | None = None,
    max_side: int | None = None,
    on_skip: Callable[[Path, str], None] = lambda photo, reason: None,
) -> FolderReport:
    """Matte every photo; write ``out_dir/<stem>.png`` (and cutouts). Failures are skipped, reported, counted.

    ``interactive`` False ignores prompt files (automatic for all), True requires one per photo.
    """
    photos = list(photos)
    alphas = output_paths(photos, out_dir)
    cutouts = output_paths(photos, cutout_dir) if cutout_dir is not None else {}
    report = FolderReport()
    for photo_path in photos:
        prompt_file = photo_path.with_suffix(".json")
        try:
            photo = images.load_image(photo_path)
            prompt_list = P.load_prompt_file(prompt_file) if prompt_file.is_file() and interactive is not False else []
            if interactive and not prompt_list:
                raise SmatError(f"interactive mode needs a prompt file {prompt_file.name} beside the photo")
            matte = matte_photo(runtime, photo, prompt_list, interactive, max_side)
            images.save_alpha(alphas[photo_path], matte.alpha)
            if photo_path in cutouts:
                images.save_cutout(cutouts[photo_path], photo, matte.alpha)
        except SmatError as err:
            report.skipped.append({"image": str(photo_path), "reason": str(err)})
            on_skip(photo_path, str(err))
            continue
        report.done.append(
            {
                "image": str(photo_path),
                "size": [photo.shape[1], photo.shape[0]],
                "mode": "interactive" if matte.interactive else "automatic",
                "prompt": str(P.prompt_kind(prompt_list)),
                "alpha": str(alphas[photo_path]),
                "cutout": str(cutouts[photo_path]) if photo_path in cutouts else None,
                "seconds": round(matte.seconds, 3),
            }
        )
    return report
