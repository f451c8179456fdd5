"""The weights ``smat-deploy demo`` uses without ``--checkpoint``: a brief fine-tune on synthetic composites.

Seeded weights give an almost constant alpha, so a demo on them shows every cutout as the whole photo,
half transparent. :data:`DEMO_FINETUNE` (40 to 70 s on two CPU cores) trains only the prompt attention and
the decoder on :data:`DEMO_COMPOSITES` generated composites; the result finds the object on the demo
photo, with some haze left on the background. It is deterministic, built once and cached, and it is
**not** a real SMat checkpoint: its mattes say nothing about SMat's quality. The test suite's
``finetuned_checkpoint`` fixture is the same recipe, so the demo and the tests see identical weights.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from smat_deploy import __version__
from smat_deploy._files import prepare_folder
from smat_deploy.data.synthetic import SyntheticComposites
from smat_deploy.model import load_model
from smat_deploy.train.finetune import FinetuneConfig, finetune

#: The recipe: on the 378x504 demo photo its alpha is near 1 on the object and about 0.25 on the background.
DEMO_FINETUNE = FinetuneConfig(steps=40, batch_size=4, size=112, lr=2e-3, freeze_backbone=True, seed=0)
#: Synthetic composites (seeds ``0 .. DEMO_COMPOSITES - 1``) the recipe trains on.
DEMO_COMPOSITES = 32
#: Environment variable that overrides the cache folder.
CACHE_ENV = "SMAT_DEPLOY_CACHE"
#: File name prefix of the cached checkpoints (``<prefix>-<key>.pth``).
DEMO_PREFIX = "demo-weights"

_PACKAGE = Path(__file__).resolve().parents[1]


def describe_demo_weights(config: FinetuneConfig = DEMO_FINETUNE) -> str:
    """The label every output carries for these weights."""
    return f"fine-tuned {config.steps} steps on synthetic composites, not a real SMat checkpoint"


def default_cache_dir() -> Path:
    """``$SMAT_DEPLOY_CACHE``, else ``$XDG_CACHE_HOME/smat-deploy``, else ``~/.cache/smat-deploy``."""
    if override := os.environ.get(CACHE_ENV):
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    return (Path(base).expanduser() if base else Path.home() / ".cache") / "smat-deploy"


def weights_key(config: FinetuneConfig = DEMO_FINETUNE, composites: int = DEMO_COMPOSITES) -> str:
    """Changes whenever the recipe, the package version or the code that trains could change the result."""
    digest = hashlib.sha256(repr((config.to_dict(), composites, __version__)).encode())
    for path in sorted(p for part in ("model", "data", "train") for p in (_PACKAGE / part).glob("*.py")):
        digest.update(path.relative_to(_PACKAGE).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def demo_checkpoint_path(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    config: FinetuneConfig = DEMO_FINETUNE,
    composites: int = DEMO_COMPOSITES,
    prefix: str = DEMO_PREFIX,
) -> Path:
    """Where :func:`demo_checkpoint` keeps the checkpoint of this recipe (whether or not it exists yet)."""
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return folder / f"{prefix}-{weights_key(config, composites)}.pth"


def demo_checkpoint(
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    config: FinetuneConfig = DEMO_FINETUNE,
    composites: int = DEMO_COMPOSITES,
    prefix: str = DEMO_PREFIX,
    log: Callable[[str], None] = lambda message: None,
) -> Path:
    """The checkpoint of the recipe: trained on the first call, then read from ``cache_dir``.

    The file is keyed by :func:`weights_key` and written atomically, so an interrupted run never leaves
    a partial checkpoint under the final name; older checkpoints with the same ``prefix`` (other keys)
    are removed when a new one is built.
    """
    path = demo_checkpoint_path(cache_dir, config=config, composites=composites, prefix=prefix)
    if path.is_file():
        log(f"demo weights: {path} (cached)")
        return path
    folder = prepare_folder(path.parent, "cache")
    log(f"fine-tuning demo weights: {config.steps} steps on synthetic composites (first run only, cached in {folder})")
    for stale in folder.glob(f"{prefix}-*.pth"):
        stale.unlink(missing_ok=True)
    model = load_model(seed=config.seed)
    data = SyntheticComposites(composites, config.size)
    report_every = max(1, config.steps // 4)

    def on_step(step: int, losses: dict[str, float]) -> None:
        if step % report_every == 0 or step == config.steps:
            log(f"  step {step}/{config.steps}, loss {losses['loss']:.3f}")

    result = finetune(model, data, config, path, on_step=on_step)
    log(f"demo weights: {path} ({result.seconds:.0f} s)")
    return path
