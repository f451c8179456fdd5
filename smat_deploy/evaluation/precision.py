"""Every precision side by side on ONNX Runtime CPU, measured in one run: speed and accuracy against float32.

The artifacts themselves are made by :mod:`smat_deploy.engines.variants`; this reads what is there.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from smat_deploy._ort import session as ort_session
from smat_deploy.contract import manifest_path_for, read_manifest
from smat_deploy.data.cases import make_case
from smat_deploy.engines.shares import precision_shares
from smat_deploy.engines.variants import HOLDOUT_SEED, VARIANT_FILES, compare, holdout_samples
from smat_deploy.errors import SmatError


def benchmark_precisions(
    export_dir: str | os.PathLike[str] = "export",
    *,
    size: int = 518,
    iters: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    holdout: int = 3,
    progress: Callable | None = None,
) -> list[dict]:
    """float32 and every variant present (CPU graph, fp16, int8, int8_cpu) side by side on ONNX Runtime
    CPU, measured in one run.

    Timing is interleaved (one run of each model in turn, ``iters`` rounds) so that a machine whose
    speed drifts affects every model alike; the speed-up is the ratio of medians to float32.
    Accuracy is against float32 on the INT8 gate's default held-out set: ``holdout`` composites no calibration
    set contains and scikit-image's bundled held-out photos with every prompt kind. Each row also gives the
    share of the model's FLOPs and activation bytes computed in int8, fp16 and fp32
    (:func:`~smat_deploy.engines.shares.precision_shares`, at ``size``).
    """
    import onnx

    export_dir = Path(export_dir)
    files = {"float32": "smat.onnx", **VARIANT_FILES}
    present = {k: export_dir / f for k, f in files.items() if (export_dir / f).is_file()}
    if "float32" not in present:
        raise SmatError(f"no {export_dir / 'smat.onnx'}: run smat-deploy export first")
    sessions = {k: ort_session(p, precision=k, threads=threads) for k, p in present.items()}
    feed = make_case("benchmark", (size, size), ("point",), seed=HOLDOUT_SEED - 1).feed()
    for _ in range(warmup):
        for s in sessions.values():
            s.run(["alpha"], feed)
    times: dict[str, list[float]] = {k: [] for k in sessions}
    rounds = range(iters) if progress is None else progress(range(iters))
    for _ in rounds:
        for kind, s in sessions.items():
            start = time.perf_counter()
            s.run(["alpha"], feed)
            times[kind].append(time.perf_counter() - start)
    feeds = [feed for _, feed in holdout_samples(holdout, size)]
    base = float(np.median(times["float32"]))
    rows = []
    for kind, path in present.items():
        manifest = read_manifest(manifest_path_for(path)) or {}
        made = manifest.get("export_seconds") if kind == "float32" else manifest.get("conversion_seconds")
        accuracy = compare(sessions["float32"], sessions[kind], feeds) if kind != "float32" else None
        median = float(np.median(times[kind]))
        shares = precision_shares(onnx.load(str(path)), feed, precision=kind)
        rows.append(
            {
                "precision": kind,
                "file": path.name,
                "size_MB": round(path.stat().st_size / 1e6, 1),
                "made_in_s": made,
                "ms_per_image": round(1000 * median, 1),
                "speedup": round(base / median, 2),
                "mean_abs": None if accuracy is None else accuracy["mean_abs"],
                "max_abs": None if accuracy is None else accuracy["max_abs"],
                "SAD": None if accuracy is None else accuracy["SAD"],
                "Grad": None if accuracy is None else accuracy["Grad"],
                **{f"flops_{k}": v for k, v in shares["flops"].items()},
                **{f"act_bytes_{k}": v for k, v in shares["activation_bytes"].items()},
                "attention_fp16": shares["attention_products"]["fp16"],
            }
        )
    return rows
