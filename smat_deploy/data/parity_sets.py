"""What ``smat-deploy parity`` compares on: a calibration set, a photo folder, or generated composites.

Every source becomes a list of :class:`ParitySample` (one image with one prompt kind, and its ground
truth alpha when one is known), already capped to the working size, so the engine and the reference
see exactly the same inputs.

Sources (``data``):

- a **calibration set** (a folder with ``index.json``, made by ``smat-deploy calib-data``): its
  images, its stored prompt masks and the exact alphas of its composites;
- a **photo folder**: either the folder-dataset layout (``image/`` + ``alpha/`` with matching stems,
  or ``images/`` + ``alphas/``, ``original/`` + ``mask/``, ``merged/`` + ``alpha/``), or any tree of
  photos with their ground truth beside them, found by name (see :func:`scan_photo_folder`);
- ``None``: ``calib_data/`` when it has been built, else the **bundled set** (:func:`bundled_data`): the real
  photos scikit-image's wheel ships that no default calibration set holds
  (:data:`~smat_deploy.data.calibration.HOLDOUT_PHOTOS`) and :data:`SYNTHETIC_COUNT` generated composites with
  exact alpha, the same on every machine.

Prompts: from the ground-truth alpha when there is one (:func:`~smat_deploy.data.cases.prompt_from_alpha`),
else on the central region (the middle 40 % of each side), as the calibration set does for photos.
A photo's prompt file (``dog.jpg`` -> ``dog.json``, the format of ``matte --prompt``) is the extra
kind ``file``. Unreadable photos or alphas, alphas of another size than their photo and broken prompt
files are skipped with a reason; the rest still run.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from smat_deploy import images
from smat_deploy import prompts as P
from smat_deploy.contract import MIN_SIDE
from smat_deploy.contract import PROMPT_KINDS as CONTRACT_PROMPT_KINDS
from smat_deploy.data.calibration import load_calibration_set
from smat_deploy.data.cases import central_region, prompt_from_alpha
from smat_deploy.data.folder import LAYOUTS
from smat_deploy.data.synthetic import make_composite
from smat_deploy.errors import SmatError
from smat_deploy.images import PHOTO_SUFFIXES

#: The prompt kinds derived for every image, in table order; ``file`` is a photo's own prompt file.
DERIVED_KINDS = CONTRACT_PROMPT_KINDS
PROMPT_KINDS = (*DERIVED_KINDS, "file")
#: Composites generated when no other data is around.
SYNTHETIC_COUNT = 2
#: Their seeds: far from the calibration set's (0..) and the precision hold-out's (900_000..).
SYNTHETIC_SEED = 700_000
#: Default long-side cap: SMat's native 518x518 grid, and a few seconds per call on a CPU.
DEFAULT_MAX_SIZE = 518

#: Name tokens (split at ``_``, ``-``, ``.`` and spaces) that mark a file as ground-truth alpha.
ALPHA_TOKENS = frozenset({"alpha", "truth", "gt", "matte"})
#: Tokens that mark a file as something other than a photo (trimap, prediction, layers, masks).
NOT_PHOTO_TOKENS = ALPHA_TOKENS | {"trimap", "tri", "pred", "prediction", "fg", "bg", "mask", "prompt"}
#: Tokens a photo's name may carry that its alpha's name does not (``merged_GT05`` <-> ``alpha_GT05``).
PHOTO_ROLE_TOKENS = frozenset({"merged", "rgb", "image", "img", "composite", "comp", "input", "photo"})


@dataclass(frozen=True)
class ParitySample:
    """One image with one prompt kind; ``image`` arrays are shared between the kinds of one image."""

    name: str
    kind: str
    image: np.ndarray  # float32 HxWx3 in [0, 1], at the working size
    prompt: np.ndarray  # float32 HxW of 0 and 1
    alpha: np.ndarray | None  # float32 HxW ground truth at the working size, when known
    alpha_source: str | None = None

    @property
    def state(self) -> float:
        return float(self.prompt.any())

    @property
    def size(self) -> str:
        height, width = self.prompt.shape
        return f"{width}x{height}"


@dataclass
class ParityData:
    source: str  # one line: what was used, and why
    kind: str  # "calibration", "photos" or "synthetic"
    samples: list[ParitySample] = field(default_factory=list)
    images: int = 0
    skipped: list[dict] = field(default_factory=list)  # {"item": ..., "reason": ...}


def parse_prompt_kinds(prompts: str | Sequence[str]) -> tuple[str, ...]:
    """``"none,point"`` or a sequence -> kinds in table order; unknown or empty is an error."""
    items = prompts.split(",") if isinstance(prompts, str) else list(prompts)
    kinds = [item.strip().lower() for item in items if item.strip()]
    if not kinds:
        raise SmatError(f"--prompts is empty: name one or more of {','.join(PROMPT_KINDS)}")
    if unknown := sorted(set(kinds) - set(PROMPT_KINDS)):
        raise SmatError(f"unknown prompt kind(s) {', '.join(unknown)}: expected some of {','.join(PROMPT_KINDS)}")
    return tuple(kind for kind in PROMPT_KINDS if kind in kinds)


def derived_prompt(alpha: np.ndarray | None, shape: tuple[int, int], kind: str) -> np.ndarray:
    """The prompt mask of ``kind``: from the alpha when known, else on the central region."""
    source = alpha if alpha is not None else central_region(*shape)
    return P.rasterize(prompt_from_alpha(source, kind), shape)


def _cap(array: np.ndarray, max_size: int | None) -> np.ndarray:
    if max_size is None:
        return array
    if array.ndim == 2:
        return images.cap_long_side(array[..., None], max_size)[..., 0]
    return images.cap_long_side(array, max_size)


# -- photo folders ------------------------------------------------------------------------------------
def _tokens(stem: str) -> list[str]:
    return [t for t in re.split(r"[_\-. ]+", stem.lower()) if t]


def _is_photo_file(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in PHOTO_SUFFIXES


def _alpha_for(photo: Path, candidates: list[Path]) -> tuple[Path | None, str | None]:
    """The ground-truth alpha beside ``photo``: its name's tokens plus exactly one alpha token (any order)."""
    base = _tokens(photo.stem)
    stripped = [t for t in base if t not in PHOTO_ROLE_TOKENS] or base
    matches = []
    for candidate in candidates:
        tokens = _tokens(candidate.stem)
        alpha_words = [t for t in tokens if t in ALPHA_TOKENS]
        rest = [t for t in tokens if t not in ALPHA_TOKENS]
        if len(alpha_words) == 1 and rest in (base, stripped):
            matches.append(candidate)
    if len(matches) > 1:
        return None, f"several alphas match {photo.name} ({', '.join(m.name for m in matches)}); none used"
    return (matches[0] if matches else None), None


def scan_photo_folder(root: str | os.PathLike[str]) -> tuple[list[tuple[Path, Path | None]], list[str]]:
    """``([(photo, alpha or None)], notes)`` for every photo under ``root``: those with an alpha first, by path.

    With a folder-dataset layout (``image/`` + ``alpha/`` ...), alphas pair with photos by stem.
    Otherwise every photo in ``root`` and its subfolders counts, except files whose name marks them as
    something else (a token such as ``alpha``, ``truth``, ``trimap``, ``pred``, ``fg``, ``bg``,
    ``mask``). A photo's ground truth is the file beside it named like the photo plus one of
    ``alpha``/``truth``/``gt``/``matte``: ``GT01.png`` <-> ``GT01_truth.png``, ``lemur.png`` <->
    ``lemur_alpha.png``, ``merged_GT05.jpg`` <-> ``alpha_GT05.jpg``. Predictions (``*_pred_alpha``)
    are never taken for ground truth.
    """
    root = Path(root)
    if not root.is_dir():
        raise SmatError(f"data folder not found: {root}")
    notes: list[str] = []
    for image_name, alpha_name in LAYOUTS:
        image_dir, alpha_dir = root / image_name, root / alpha_name
        if image_dir.is_dir() and alpha_dir.is_dir():
            alphas: dict[str, list[Path]] = {}
            for path in sorted(filter(_is_photo_file, alpha_dir.iterdir())):
                alphas.setdefault(path.stem, []).append(path)
            pairs = []
            for photo in sorted(filter(_is_photo_file, image_dir.iterdir())):
                found = alphas.get(photo.stem, [])
                if len(found) > 1:
                    notes.append(f"several alphas for {photo.name} in {alpha_name}/; none used")
                pairs.append((photo, found[0] if len(found) == 1 else None))
            return pairs, notes
    pairs = []
    for folder, subfolders, _files in sorted(os.walk(root)):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        files = sorted(p for p in Path(folder).iterdir() if _is_photo_file(p))
        candidates = [p for p in files if set(_tokens(p.stem)) & ALPHA_TOKENS]
        for path in files:
            if set(_tokens(path.stem)) & NOT_PHOTO_TOKENS:
                continue
            alpha, note = _alpha_for(path, candidates)
            if note:
                notes.append(note)
            pairs.append((path, alpha))
    pairs.sort(key=lambda pair: (pair[1] is None, str(pair[0])))  # photos with ground truth first
    return pairs, notes


def _display(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def load_photo_folder(
    root: str | os.PathLike[str],
    kinds: Sequence[str],
    *,
    max_size: int | None = DEFAULT_MAX_SIZE,
    limit: int | None = None,
    on_skip: Callable[[str, str], None] = lambda item, reason: None,
) -> ParityData:
    root = Path(root)
    pairs, notes = scan_photo_folder(root)
    if not pairs:
        raise SmatError(f"no photos in {root} (looked for {', '.join(PHOTO_SUFFIXES)}, also in subfolders)")
    with_alpha = sum(alpha is not None for _, alpha in pairs)
    data = ParityData(f"photo folder {root} ({len(pairs)} photos, {with_alpha} with ground-truth alpha)", "photos")
    for note in notes:
        warnings.warn(note, stacklevel=2)
    for photo_path, alpha_path in pairs:
        if limit is not None and data.images >= limit:
            break
        name = _display(photo_path, root)
        try:
            photo = images.load_image(photo_path)
            alpha = None
            if alpha_path is not None:
                alpha = images.load_mask_image(alpha_path)
                if alpha.shape != photo.shape[:2]:
                    raise SmatError(
                        f"its alpha {alpha_path.name} is {alpha.shape[1]}x{alpha.shape[0]} but the photo is "
                        f"{photo.shape[1]}x{photo.shape[0]}"
                    )
        except SmatError as err:
            data.skipped.append({"item": name, "reason": str(err)})
            on_skip(name, str(err))
            continue
        working = _cap(photo, max_size)
        gt = None if alpha is None else np.clip(_cap(alpha, max_size), 0.0, 1.0)
        shape = working.shape[:2]
        data.images += 1
        gt_name = None if alpha_path is None else _display(alpha_path, root)
        for kind in kinds:
            if kind == "file":
                prompt_file = photo_path.with_suffix(".json")
                if not prompt_file.is_file():
                    continue
                try:
                    mask = P.rasterize(P.load_prompt_file(prompt_file), photo.shape[:2])
                    if not mask.any():
                        raise SmatError("it marks no pixel")
                except SmatError as err:
                    item = _display(prompt_file, root)
                    data.skipped.append({"item": item, "reason": str(err)})
                    on_skip(item, str(err))
                    continue
                mask = images.resize_alpha_nearest(mask, shape)
            else:
                mask = derived_prompt(gt, shape, kind)
            data.samples.append(ParitySample(name, kind, working, mask, gt, gt_name))
    return data


# -- calibration sets and composites ---------------------------------------------------------------------
def load_calibration_data(
    directory: str | os.PathLike[str],
    kinds: Sequence[str],
    *,
    max_size: int | None = DEFAULT_MAX_SIZE,
    limit: int | None = None,
) -> ParityData:
    calib = load_calibration_set(directory)
    names = list(dict.fromkeys(sample["image"] for sample in calib.samples))
    kept = set(names[:limit] if limit is not None else names)
    data = ParityData(
        f"calibration set {calib.directory} ({len(names)} images x prompt kinds, {calib.size}x{calib.size})",
        "calibration",
    )
    data.images = len(kept)
    working: dict[str, tuple[np.ndarray, np.ndarray | None]] = {}
    for index, sample in enumerate(calib.samples):
        if sample["image"] not in kept or sample.get("prompt_kind") not in kinds:
            continue
        name = Path(sample["image"]).stem
        if sample["image"] not in working:
            image = _cap(np.ascontiguousarray(calib.image[index].transpose(1, 2, 0)), max_size)
            alpha = None
            if sample.get("alpha"):
                alpha = np.clip(_cap(images.load_mask_image(calib.directory / sample["alpha"]), max_size), 0.0, 1.0)
            working[sample["image"]] = (image, alpha)
        image, alpha = working[sample["image"]]
        prompt = images.resize_alpha_nearest(calib.prompt[index, 0], image.shape[:2])
        data.samples.append(ParitySample(name, sample["prompt_kind"], image, prompt, alpha, sample.get("alpha")))
    return data


def synthetic_data(
    kinds: Sequence[str], *, max_size: int | None = DEFAULT_MAX_SIZE, count: int = SYNTHETIC_COUNT
) -> ParityData:
    """``count`` composites (alternately square and 4:3) with exact alpha, at the working size."""
    side = max_size or DEFAULT_MAX_SIZE
    data = ParityData(f"{count} generated composites with exact alpha", "synthetic")
    for index in range(count):
        shape = (side, side) if index % 2 == 0 else (max(MIN_SIDE, round(side * 0.75)), side)
        composite = make_composite(shape, seed=SYNTHETIC_SEED + index)
        data.images += 1
        for kind in kinds:
            if kind != "file":
                prompt = derived_prompt(composite.alpha, shape, kind)
                sample = ParitySample(f"composite_{index}", kind, composite.image, prompt, composite.alpha, "exact")
                data.samples.append(sample)
    return data


def bundled_data(
    kinds: Sequence[str],
    *,
    max_size: int | None = DEFAULT_MAX_SIZE,
    limit: int | None = None,
    composites: int = SYNTHETIC_COUNT,
) -> ParityData:
    """The default set, the same on every machine: scikit-image's bundled held-out photos
    (:data:`~smat_deploy.data.calibration.HOLDOUT_PHOTOS`, prompts on the central region) then ``composites``
    generated composites with exact alpha; ``limit`` caps the photos and the composites alike."""
    from smat_deploy.data.calibration import HOLDOUT_PHOTOS, bundled_photo

    photos = HOLDOUT_PHOTOS[:limit] if limit is not None else HOLDOUT_PHOTOS
    count = min(composites, limit) if limit is not None else composites
    data = ParityData(
        f"bundled set: {len(photos)} scikit-image photos (held out from calibration) + {count} generated composites",
        "bundled",
    )
    for function, filename, _ in photos:
        image = _cap(bundled_photo(filename), max_size)
        data.images += 1
        for kind in kinds:
            if kind != "file":
                prompt = derived_prompt(None, image.shape[:2], kind)
                data.samples.append(ParitySample(f"skimage_{function}", kind, image, prompt, None, None))
    if count:
        generated = synthetic_data(kinds, max_size=max_size, count=count)
        data.images += generated.images
        data.samples += generated.samples
    return data


def load_parity_data(
    data: str | os.PathLike[str] | None,
    kinds: Iterable[str] = DERIVED_KINDS,
    *,
    max_size: int | None = DEFAULT_MAX_SIZE,
    limit: int | None = None,
    on_skip: Callable[[str, str], None] = lambda item, reason: None,
    use_calibration_set: bool = True,
) -> ParityData:
    """The samples for ``data`` (see the module docstring for what each source gives).

    ``use_calibration_set=False`` leaves ``calib_data/`` out of the default choice, for checks that
    should see no image a quantiser was calibrated on.
    """
    kinds = tuple(kinds)
    if max_size is not None and max_size < MIN_SIDE:
        raise SmatError(f"--max-side must be at least {MIN_SIDE}, got {max_size}")
    if limit is not None and limit < 1:
        raise SmatError(f"--limit must be at least 1, got {limit}")
    if data is None:
        default_calib = Path("calib_data")
        if use_calibration_set and (default_calib / "index.json").is_file():
            found = load_calibration_data(default_calib, kinds, max_size=max_size, limit=limit)
            found.source += " [default: calib_data/ is built]"
        else:
            found = bundled_data(kinds, max_size=max_size, limit=limit)
            found.source += " [default]"
    else:
        path = Path(data)
        if not path.exists():
            raise SmatError(f"data folder not found: {path}")
        if not path.is_dir():
            raise SmatError(f"--data must be a folder (a calibration set or photos), got the file {path}")
        if (path / "index.json").is_file():
            found = load_calibration_data(path, kinds, max_size=max_size, limit=limit)
        else:
            found = load_photo_folder(path, kinds, max_size=max_size, limit=limit, on_skip=on_skip)
    if not found.samples and not found.skipped:
        raise SmatError(f"nothing to compare in {found.source} with prompt kinds {','.join(kinds)}")
    return found
