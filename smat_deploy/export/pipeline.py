"""The whole export step: ONNX file, graph checks, parity, golden data, manifest.

Everything is verified on a temporary file; only a file that passed replaces the previous
``smat.onnx``, so a crash or a failed check mid-export leaves the old artifact intact.

The check against TensorRT's ONNX support matrix is recorded (manifest key ``tensorrt_support``) but
does not stop the export: ``smat.onnx`` also serves ONNX Runtime and every derived variant, parity has
verified it, and the matrix is a published approximation of a parser that is not run here. A graph
that fails it is written with a warning and ``passed: false``, which the engine step can act on.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from smat_deploy._files import atomic_output, prepare_folder
from smat_deploy.contract import manifest_path_for
from smat_deploy.data.cases import standard_cases
from smat_deploy.errors import CheckFailed, SmatError
from smat_deploy.export.golden import save_golden
from smat_deploy.export.graph_checks import check_graph, failed
from smat_deploy.export.interactive import PairReport, export_pair
from smat_deploy.export.manifest import build_manifest, write_manifest
from smat_deploy.export.onnx_export import DEFAULT_OPSET, MIN_OPSET, export_onnx
from smat_deploy.export.parity import DEFAULT_TOLERANCE, ParityReport, run_parity
from smat_deploy.export.tensorrt_support import check_tensorrt_support
from smat_deploy.model import SMat, describe_weights, load_model

ONNX_NAME = "smat.onnx"


@dataclass
class ExportReport:
    onnx_path: Path
    manifest_path: Path
    export_seconds: float
    size_bytes: int
    graph_checks: list[dict]
    parity: ParityReport | None
    golden: tuple[Path, Path] | None = None
    notes: list[str] = field(default_factory=list)
    tensorrt_support: dict | None = None
    #: The interactive pair (``export --interactive``), verified against the same reference.
    pair: PairReport | None = None


def count_layer_norms(model: SMat) -> int:
    from torch import nn

    return sum(isinstance(m, nn.LayerNorm) for m in model.modules())


def export_float32(
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    output_dir: str | os.PathLike[str] = "export",
    opset: int = DEFAULT_OPSET,
    check: bool = True,
    tolerance: float = DEFAULT_TOLERANCE,
    golden_dir: str | os.PathLike[str] | None = None,
    seed: int = 0,
    interactive: bool = False,
    log: Callable[[str], None] = lambda message: None,
) -> ExportReport:
    """Export the reference model to ``output_dir/smat.onnx`` with its manifest; verify on the way.

    ``interactive``: also write the encoder/decoder pair (:mod:`smat_deploy.export.interactive`) beside it.
    """
    if opset < MIN_OPSET:
        raise SmatError(f"opset {opset} is too old: SMat needs >= {MIN_OPSET} (LayerNormalization as one node)")
    output_dir = prepare_folder(output_dir, "output")
    model = load_model(checkpoint, seed=seed)
    weights = describe_weights(checkpoint, seed)
    onnx_path = output_dir / ONNX_NAME
    parity = None
    with atomic_output(onnx_path) as tmp:
        log(f"exporting {weights} to ONNX (opset {opset}, dynamic batch/height/width)")
        result = export_onnx(model, tmp, opset=opset)
        log(f"exported in {result.seconds:.1f}s ({result.size_bytes / 1e6:.1f} MB)")
        graph = onnx.load(str(tmp))
        checks = [c.as_dict() for c in check_graph(graph, count_layer_norms(model))]
        if bad := [c for c in checks if not c["passed"]]:
            raise CheckFailed(
                "exported graph is not TensorRT-ready: " + "; ".join(f"{c['name']}: {c['detail']}" for c in bad)
            )
        support = check_tensorrt_support(graph)
        del graph
        if support["passed"]:
            log(f"TensorRT support matrix: all {sum(support['operators'].values())} nodes supported")
        else:
            problems = support["problems"]
            warnings.warn(
                f"{ONNX_NAME} breaks TensorRT's ONNX support matrix in {len(problems)} place(s), first: {problems[0]}; "
                "it is still exported for ONNX Runtime (see tensorrt_support in the manifest)",
                stacklevel=2,
            )
        if check:
            log("checking parity against the PyTorch reference (ONNX Runtime CPU)")
            parity = run_parity(tmp, model, standard_cases(), tolerance)
            if not parity.passed:
                raise CheckFailed(
                    f"parity failed: max |alpha diff| {parity.max_abs:.2e} > {tolerance:g}; nothing was replaced"
                )
        manifest = build_manifest(
            tmp,
            model,
            opset=opset,
            checkpoint=checkpoint,
            weights=weights,
            export_seconds=result.seconds,
            graph_checks=checks,
            tensorrt_support=support,
            parity=None if parity is None else parity.as_dict(),
        )
        manifest["model"] = ONNX_NAME
    manifest_path = write_manifest(manifest_path_for(onnx_path), manifest)
    golden = save_golden(golden_dir, model, standard_cases()) if golden_dir is not None else None
    pair = None
    if interactive:
        pair = export_pair(
            model,
            output_dir,
            checkpoint=checkpoint,
            weights=weights,
            opset=opset,
            check=check,
            tolerance=tolerance,
            golden_dir=None if golden_dir is None else Path(golden_dir),
            log=log,
        )
    return ExportReport(
        onnx_path,
        manifest_path,
        result.seconds,
        result.size_bytes,
        checks,
        parity,
        golden,
        tensorrt_support=support,
        pair=pair,
    )


__all__ = ["ONNX_NAME", "ExportReport", "export_float32", "failed"]
