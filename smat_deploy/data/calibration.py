"""The calibration set: images, prompts of every kind, and the stacked tensors quantisers read.

Layout of a calibration folder (everything generated; nothing here is committed)::

    index.json      format, size, seed, and one entry per sample: image, alpha (if known), prompts, state
    images/         the photos, resized and centre-cropped to ``size x size`` (PNG)
    alphas/         exact alpha of the synthetic composites (PNG)
    calib.npz       image [N,3,S,S], prompt [N,1,S,S], state [N,1] float32, in index order

Every image is paired with each prompt kind (none, point, box, scribble, mask), so the quantiser sees
automatic and interactive activations alike. Synthetic composites get prompts from their exact alpha;
photos have no alpha, so their prompts mark the central region, where salient objects usually are.

Real photos matter: activations on them reach ranges that synthetic composites alone never do, and INT8
ranges calibrated on composites only clip them (TensorRT INT8 max |alpha diff| on held-out real photos
0.068 with 2 composites, 0.036 with 1 composite + the 4 built-in photos). So by default the set also
holds :data:`BUILTIN_PHOTOS`, four freely licensed photos that scikit-image's wheel ships: read from the
installed package, never downloaded, and never copied into this repository.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from smat_deploy import images as image_io
from smat_deploy import prompts as P
from smat_deploy.contract import MIN_SIDE, PROMPT_KINDS
from smat_deploy.data.cases import central_region, prompt_from_alpha
from smat_deploy.data.synthetic import make_composite
from smat_deploy.errors import SmatError
from smat_deploy.images import PHOTO_SUFFIXES

INDEX_FORMAT = "smat-deploy/calibration/1"
DEFAULT_SIZE = 518
#: Default composites: 1, plus the 4 built-in photos, x 5 prompt kinds = 25 samples. Calibration memory
#: grows with the sample count, so the photos replaced the second composite rather than joining it.
DEFAULT_SYNTHETIC = 1
#: Real photos bundled in scikit-image's wheel (``skimage/data/``), in calibration order:
#: (``skimage.data`` function, file, licence as its docstring states it). Only bundled files are used:
#: scikit-image downloads its other data sets, and calibration never reaches the network.
BUILTIN_PHOTOS = (
    ("astronaut", "astronaut.png", "public domain (NASA, Eileen Collins)"),
    ("chelsea", "chelsea.png", "CC0 (Stefan van der Walt)"),
    ("coffee", "coffee.png", "CC0 (Rachel Michetti)"),
    ("rocket", "rocket.jpg", "public domain (SpaceX)"),
)
#: Real photos in the same wheel that no default calibration set holds: the default held-out photos of the INT8
#: budget (``export --holdout-photos``) and of ``parity`` and the demo, the same on every machine.
HOLDOUT_PHOTOS = (
    ("camera", "camera.png", "CC0 (Lav Varshney)"),
    ("retina", "retina.jpg", "CC0 (Häggström, Mikael)"),
    ("hubble_deep_field", "hubble_deep_field.jpg", "public domain (NASA)"),
    ("immunohistochemistry", "ihc.png", "no known copyright restrictions"),
    ("coins", "coins.png", "no known copyright restrictions"),
)


@dataclass(frozen=True)
class CalibrationSet:
    directory: Path
    size: int
    image: np.ndarray  # [N,3,S,S]
    prompt: np.ndarray  # [N,1,S,S]
    state: np.ndarray  # [N,1]
    samples: list[dict]

    def __len__(self) -> int:
        return len(self.samples)

    def feeds(self) -> list[dict[str, np.ndarray]]:
        """One ONNX feed dict (batch 1) per sample."""
        return [
            {"image": self.image[i : i + 1], "prompt": self.prompt[i : i + 1], "state": self.state[i : i + 1]}
            for i in range(len(self))
        ]


def prompts_for(alpha: np.ndarray | None, size: int, kind: str) -> list[P.Prompt]:
    """Deterministic prompt of ``kind`` from a known alpha, or on the central region when none is known."""
    return prompt_from_alpha(alpha if alpha is not None else central_region(size, size), kind)


def _square(image: np.ndarray, size: int) -> np.ndarray:
    """Resize the short side to ``size`` (bilinear), then centre-crop to ``size x size``."""
    height, width = image.shape[:2]
    scale = size / min(height, width)
    new_w, new_h = max(size, round(width * scale)), max(size, round(height * scale))
    channels = [
        np.asarray(Image.fromarray(image[..., c], mode="F").resize((new_w, new_h), Image.Resampling.BILINEAR))
        for c in range(image.shape[-1])
    ]
    resized = np.clip(np.stack(channels, axis=-1), 0, 1)
    top, left = (new_h - size) // 2, (new_w - size) // 2
    return resized[top : top + size, left : left + size].astype(np.float32)


def bundled_photo(filename: str, hint: str = "pip install scikit-image") -> np.ndarray:
    """One photo scikit-image's wheel ships (``skimage/data/``), as float32 RGB; read, never downloaded."""
    try:
        folder = importlib.resources.files("skimage.data")
    except ModuleNotFoundError:
        raise SmatError(f"the bundled photos come with scikit-image, which is not installed: {hint}") from None
    resource = folder / filename
    if not resource.is_file():
        raise SmatError(f"scikit-image's bundled photo {filename} is missing: {hint}")
    with importlib.resources.as_file(resource) as path:
        return image_io.load_image(path)


def _builtin_photos(size: int) -> list[tuple[str, np.ndarray, str]]:
    """(name, photo, origin) for each of :data:`BUILTIN_PHOTOS`, read from the installed scikit-image."""
    hint = "pip install scikit-image, or leave the built-in photos out (--no-builtin-photos)"
    return [
        (
            f"photo_skimage_{function}",
            _square(bundled_photo(filename, hint), size),
            f"scikit-image skimage.data.{function}(): {licence}",
        )
        for function, filename, licence in BUILTIN_PHOTOS
    ]


def _user_photos(folder: Path, size: int) -> list[tuple[str, np.ndarray, str]]:
    """(file stem, photo, file name) for each readable photo in ``folder``, in name order."""
    if not folder.is_dir():
        raise SmatError(f"calibration folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
    photos, skipped = [], []
    for path in files:
        try:
            photos.append((path.stem, _square(image_io.load_image(path), size), path.name))
        except SmatError as err:
            skipped.append(f"{path.name} ({err})")
    if skipped:
        warnings.warn(f"skipped {len(skipped)} unreadable photo(s) in {folder}: {'; '.join(skipped[:3])}", stacklevel=2)
    if not photos:
        raise SmatError(f"no readable photos in {folder} (looked for {', '.join(sorted(PHOTO_SUFFIXES))})")
    return photos


def build_calibration_set(
    out: str | os.PathLike[str],
    *,
    synthetic: int = 0,
    from_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    size: int = DEFAULT_SIZE,
    builtin_photos: bool = True,
    progress=None,
) -> CalibrationSet:
    """Generate the set into ``out`` (created if needed). The same arguments always give the same set.

    Images, in order: ``synthetic`` composites, the built-in photos (:data:`BUILTIN_PHOTOS`, unless
    ``builtin_photos`` is False), then the photos in ``from_dir``; each with every prompt kind.

    The new set is written to a temporary folder first and moved into place at the end, so an
    interrupted run leaves the previous set intact.
    """
    if synthetic < 0:
        raise SmatError(f"--synthetic must be >= 0, got {synthetic}")
    if synthetic == 0 and from_dir is None and not builtin_photos:
        raise SmatError("nothing to build: give --synthetic N and/or --from DIR, or keep the built-in photos")
    if size < MIN_SIDE:
        raise SmatError(f"--size must be at least {MIN_SIDE}, got {size}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SmatError(f"calibration output is a file: {out}")
    out.mkdir(parents=True, exist_ok=True)

    photos = [] if from_dir is None else _user_photos(Path(from_dir), size)  # a bad folder fails first
    # (name, image, alpha or None, origin)
    sources: list[tuple[str, np.ndarray, np.ndarray | None, str]] = []
    for index in range(synthetic):
        composite_seed = seed * 1_000_003 + index
        sample = make_composite((size, size), seed=composite_seed)
        origin = f"synthetic composite (seed {composite_seed})"
        sources.append((f"synthetic_{index:04d}", sample.image, sample.alpha, origin))
    if builtin_photos:
        sources.extend((name, photo, None, origin) for name, photo, origin in _builtin_photos(size))
    sources.extend((f"photo_{stem}", photo, None, f"your photo {filename}") for stem, photo, filename in photos)
    names = [source[0] for source in sources]
    if len(set(names)) < len(names):
        clashing = sorted({name for name in names if names.count(name) > 1})
        raise SmatError(f"two calibration images would share the name(s) {', '.join(clashing)}: rename one")

    staging = Path(tempfile.mkdtemp(prefix=".calib-", dir=out))
    try:
        (staging / "images").mkdir()
        (staging / "alphas").mkdir()
        samples, images, masks = [], [], []
        iterator = sources if progress is None else progress(sources)
        for name, image, alpha, origin in iterator:
            image_io.save_rgb(staging / "images" / f"{name}.png", image)
            if alpha is not None:
                image_io.save_alpha(staging / "alphas" / f"{name}.png", alpha)
            for kind in PROMPT_KINDS:
                prompt_list = prompts_for(alpha, size, kind)
                mask = P.rasterize(prompt_list, (size, size))
                samples.append(
                    {
                        "id": f"{name}:{kind}",
                        "image": f"images/{name}.png",
                        "alpha": None if alpha is None else f"alphas/{name}.png",
                        "source": "synthetic" if alpha is not None else "photo",
                        "origin": origin,
                        "prompt_kind": kind,
                        "prompts": [_prompt_json(p) for p in prompt_list],
                        "state": float(mask.any()),
                    }
                )
                images.append(image.transpose(2, 0, 1))
                masks.append(mask[None])
        tensors = {
            "image": np.stack(images).astype(np.float32),
            "prompt": np.stack(masks).astype(np.float32),
            "state": np.array([[s["state"]] for s in samples], np.float32),
        }
        np.savez(staging / "calib.npz", **tensors)
        index = {"format": INDEX_FORMAT, "size": [size, size], "seed": seed, "samples": samples}
        (staging / "index.json").write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
        for name in ("images", "alphas"):
            target = out / name
            if target.exists():
                shutil.rmtree(target)
            (staging / name).rename(target)
        os.replace(staging / "calib.npz", out / "calib.npz")
        os.replace(staging / "index.json", out / "index.json")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return load_calibration_set(out)


def _prompt_json(prompt: P.Prompt) -> dict:
    if isinstance(prompt, P.Point):
        return {"type": "point", "x": prompt.x, "y": prompt.y, "radius": prompt.radius}
    if isinstance(prompt, P.Box):
        return {"type": "box", "x0": prompt.x0, "y0": prompt.y0, "x1": prompt.x1, "y1": prompt.y1}
    if isinstance(prompt, P.Scribble):
        return {"type": "scribble", "points": [list(p) for p in prompt.points], "width": prompt.width}
    return {"type": "mask", "path": "(derived from the alpha, > 0.5)"}


def load_calibration_set(directory: str | os.PathLike[str]) -> CalibrationSet:
    """Read and validate a calibration folder made by :func:`build_calibration_set`."""
    directory = Path(directory)
    index_path, tensors_path = directory / "index.json", directory / "calib.npz"
    if not directory.is_dir():
        raise SmatError(f"calibration folder not found: {directory}")
    if not index_path.is_file() or not tensors_path.is_file():
        raise SmatError(f"{directory} holds no calibration set (index.json and calib.npz); run smat-deploy calib-data")
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
        with np.load(tensors_path) as data:
            image, prompt, state = (np.asarray(data[k], np.float32) for k in ("image", "prompt", "state"))
    except (OSError, ValueError, KeyError, json.JSONDecodeError) as err:
        raise SmatError(
            f"unreadable calibration set in {directory}: {type(err).__name__}: {err}".splitlines()[0]
        ) from None
    if index.get("format") != INDEX_FORMAT:
        raise SmatError(f"{index_path} is not a smat-deploy calibration index")
    samples = index.get("samples") or []
    if not samples:
        raise SmatError(f"calibration set {directory} is empty")
    height, width = index["size"]
    sizes = set()
    for sample in samples:
        with Image.open(directory / sample["image"]) as photo:
            sizes.add((photo.height, photo.width))
    if len(sizes) > 1 or sizes != {(height, width)}:
        shown = ", ".join(f"{w}x{h}" for h, w in sorted(sizes))
        raise SmatError(f"calibration images of mixed sizes ({shown}); rebuild with smat-deploy calib-data --size")
    expected = (len(samples), 3, height, width)
    if image.shape != expected or prompt.shape != (len(samples), 1, height, width) or state.shape != (len(samples), 1):
        raise SmatError(
            f"calib.npz does not match index.json in {directory} (image {image.shape}, expected {expected})"
        )
    return CalibrationSet(directory, height, image, prompt, state, samples)
