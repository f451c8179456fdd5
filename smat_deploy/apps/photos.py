"""Photos on disk to alpha files with any :class:`~smat_deploy.runtime.Runtime`: one photo, or a folder.

Prompts are given in the original photo's pixels and rasterised at the photo's size; the runtime's
size policy (:mod:`smat_deploy.runtime.sizing`) decides the size the engine runs at and brings the alpha
back to the photo's size, so every function here works at the photo's size only.

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
from smat_deploy.runtime.sizing import SizePlan
from smat_deploy.runtime.wrapper import CallReport


@dataclass(frozen=True)
class Matte:
    alpha: np.ndarray  # float32 HxW at the photo's size
    interactive: bool
    seconds: float  # the runtime call alone
    report: CallReport | None = None  # the size plan and the seconds of each stage (whole-model runs)

    @property
    def plan(self) -> SizePlan | None:
        return None if self.report is None else self.report.plan


def prompt_mask(prompts: list[P.Prompt], photo_size: tuple[int, int], interactive: bool | None) -> np.ndarray:
    """The prompts rasterised at the photo's size (their coordinates' frame)."""
    mask = P.rasterize(prompts, photo_size)
    if interactive and not mask.any():
        raise SmatError("interactive mode needs a prompt that marks at least one pixel")
    return mask


def _state(interactive: bool | None) -> float | None:
    return None if interactive is None else float(interactive)


def _interactive(mask: np.ndarray, interactive: bool | None) -> bool:
    return bool(mask.any()) if interactive is None else interactive


def matte_photo(
    runtime: Runtime,
    photo: np.ndarray,
    prompts: list[P.Prompt],
    interactive: bool | None = None,
) -> Matte:
    """``photo`` float32 ``HxWx3`` -> alpha at its size (the runtime's size policy picks the size it runs at).

    ``interactive`` None: interactive exactly when a prompt marks a pixel; False forces automatic.
    """
    mask = prompt_mask(prompts, photo.shape[:2], interactive)
    alpha, report = runtime.call(photo, mask, _state(interactive))
    return Matte(np.asarray(alpha), _interactive(mask, interactive), report.seconds, report)


def decode_prompts(
    predictor: Predictor,
    embedding: PhotoEmbedding,
    prompts: list[P.Prompt],
    interactive: bool | None = None,
) -> Matte:
    """One prompt set on an embedded photo -> alpha at the photo's size (as :func:`matte_photo`)."""
    mask = prompt_mask(prompts, (embedding.height, embedding.width), interactive)
    return _decode_mask(predictor, embedding, mask, interactive)


def _decode_mask(predictor: Predictor, embedding: PhotoEmbedding, mask: np.ndarray, interactive: bool | None) -> Matte:
    start = time.perf_counter()
    alpha = predictor.predict(embedding, mask, _state(interactive))
    return Matte(np.asarray(alpha), _interactive(mask, interactive), time.perf_counter() - start)


@dataclass(frozen=True)
class PromptSetMattes:
    """One photo, several prompt sets: the embedding was made once, then one decoder run per set."""

    mattes: list[Matte]
    embed_seconds: float
    embedding_bytes: int
    embedding: PhotoEmbedding


def matte_prompt_sets(
    predictor: Predictor,
    photo: np.ndarray,
    prompt_sets: list[list[P.Prompt]],
    interactive: bool | None = None,
) -> PromptSetMattes:
    """``photo`` float32 ``HxWx3`` and several prompt lists -> one alpha per list, from one embedding.

    Each set is handled as :func:`matte_photo` handles its prompts; ``Matte.seconds`` is that set's
    decoder call alone.
    """
    masks = [prompt_mask(prompts, photo.shape[:2], None) for prompts in prompt_sets]
    if interactive and not all(mask.any() for mask in masks):  # every set is checked before the encoder runs
        raise SmatError("interactive mode needs a prompt that marks at least one pixel in every prompt set")
    start = time.perf_counter()
    embedding = predictor.embed(photo)
    embed_seconds = time.perf_counter() - start
    mattes = [_decode_mask(predictor, embedding, mask, interactive) for mask in masks]
    return PromptSetMattes(mattes, embed_seconds, embedding.nbytes, embedding)


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
            matte = matte_photo(runtime, photo, prompt_list, interactive)
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
                "run_size": None if matte.plan is None else [matte.plan.run_width, matte.plan.run_height],
            }
        )
    return report
