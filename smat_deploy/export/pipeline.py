"""The whole export step: ONNX file, graph checks, parity, golden data, manifest (and the pair, on request).

The sequence itself is :func:`smat_deploy.export.sequence.export_graphs`, the same for the whole model and the
interactive pair: everything is verified on temporary files, and only files that passed replace the previous
``smat.onnx``, so a crash or a failed check mid-export leaves the old artifact intact.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from smat_deploy._files import prepare_folder
from smat_deploy.contract import PRECISIONS
from smat_deploy.data.cases import standard_cases
from smat_deploy.errors import CheckFailed, SmatError
from smat_deploy.export.graph_checks import failed
from smat_deploy.export.interactive import PairReport, export_pair
from smat_deploy.export.onnx_export import DEFAULT_OPSET, MIN_OPSET, ExportResult, export_onnx
from smat_deploy.export.parity import DEFAULT_TOLERANCE, ParityReport, run_parity
from smat_deploy.export.sequence import Graph, export_graphs
from smat_deploy.model import SMat, describe_weights, load_model

ONNX_NAME = PRECISIONS["float32"].file


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


def _write_whole(model: SMat, output: Path, opset: int) -> ExportResult:
    return export_onnx(model, output, opset=opset)


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
    parity: ParityReport | None = None

    def verify(paths: dict[str, Path]) -> dict | None:
        nonlocal parity
        if not check:
            return None
        log("checking parity against the PyTorch reference (ONNX Runtime CPU)")
        parity = run_parity(paths["whole"], model, standard_cases(), tolerance)
        if not parity.passed:
            raise CheckFailed(
                f"parity failed: max |alpha diff| {parity.max_abs:.2e} > {tolerance:g}; nothing was replaced"
            )
        return parity.as_dict()

    log(f"exporting {weights} to ONNX (opset {opset}, dynamic batch/height/width)")
    whole = export_graphs(
        model,
        [Graph("whole", ONNX_NAME, _write_whole, count_layer_norms(model))],
        output_dir,
        checkpoint=checkpoint,
        weights=weights,
        opset=opset,
        verify=verify,
        log=log,
    )["whole"]
    log(f"exported in {whole.result.seconds:.1f}s ({whole.result.size_bytes / 1e6:.1f} MB)")
    golden = None
    if golden_dir is not None:
        from smat_deploy.export.golden import save_golden

        golden = save_golden(golden_dir, model, standard_cases())
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
        whole.path,
        whole.manifest_path,
        whole.result.seconds,
        whole.result.size_bytes,
        whole.checks,
        parity,
        golden,
        tensorrt_support=whole.support,
        pair=pair,
    )


__all__ = ["ONNX_NAME", "ExportReport", "export_float32", "failed"]
