"""The one export sequence, for the whole model and for the interactive pair.

For each graph: write the ONNX file under a temporary name, check it (every TensorRT-readiness property of
:mod:`~smat_deploy.export.graph_checks` against its role's I/O; a failure stops the export), check it against
TensorRT's ONNX support matrix (recorded in the manifest; a failure is a warning, because the file also serves
ONNX Runtime and OpenVINO and the matrix is a published approximation of a parser not run here). Then verify
the set against the PyTorch reference (parity), and only when everything passed do the files replace the
older ones, each followed by its manifest. A failure anywhere leaves the previous files (or none) in place,
never a half-written file or half a pair.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from smat_deploy._files import atomic_output
from smat_deploy.contract import ROLES, manifest_path_for
from smat_deploy.errors import CheckFailed
from smat_deploy.export.graph_checks import check_graph
from smat_deploy.export.manifest import build_manifest, write_manifest
from smat_deploy.export.onnx_export import ExportResult
from smat_deploy.export.tensorrt_support import check_tensorrt_support
from smat_deploy.model import SMat


@dataclass(frozen=True)
class Graph:
    """One graph to export: its role, its file name, how to write it, and what its manifest adds."""

    role: str
    file: str
    write: Callable[[SMat, Path, int], ExportResult]
    layer_norms: int
    extra: dict = field(default_factory=dict)


@dataclass
class Exported:
    """One graph written and verified."""

    role: str
    path: Path
    manifest_path: Path
    result: ExportResult
    checks: list[dict]
    support: dict


def export_graphs(
    model: SMat,
    graphs: Sequence[Graph],
    output_dir: Path,
    *,
    checkpoint: str | os.PathLike[str] | None,
    weights: str,
    opset: int,
    verify: Callable[[dict[str, Path]], dict | None] | None = None,
    log: Callable[[str], None] = lambda message: None,
) -> dict[str, Exported]:
    """Write, check and verify ``graphs`` together (see the module's text); returns them by role.

    ``verify(paths by role)`` runs the parity check on the temporary files and returns its report (``as_dict``),
    raising :class:`CheckFailed` when it fails; it is recorded in every graph's manifest.
    """
    paths = {graph.role: output_dir / graph.file for graph in graphs}
    with contextlib.ExitStack() as stack:
        tmps = {role: stack.enter_context(atomic_output(path)) for role, path in paths.items()}
        results, checks, supports = {}, {}, {}
        for graph in graphs:
            results[graph.role] = graph.write(model, tmps[graph.role], opset)
            written = onnx.load(str(tmps[graph.role]))
            contract = ROLES[graph.role]
            checks[graph.role] = [
                check.as_dict()
                for check in check_graph(written, graph.layer_norms, (contract.inputs, contract.outputs))
            ]
            if bad := [c for c in checks[graph.role] if not c["passed"]]:
                what = "graph" if graph.role == "whole" else graph.role
                raise CheckFailed(
                    f"exported {what} is not TensorRT-ready: " + "; ".join(f"{c['name']}: {c['detail']}" for c in bad)
                )
            supports[graph.role] = support = check_tensorrt_support(written)
            del written
            if support["passed"]:
                log(
                    f"TensorRT support matrix: all {sum(support['operators'].values())} nodes of {graph.file} supported"
                )
            else:
                problems = support["problems"]
                warnings.warn(
                    f"{graph.file} breaks TensorRT's ONNX support matrix in {len(problems)} place(s), first: "
                    f"{problems[0]}; it is still exported for ONNX Runtime (see tensorrt_support in the manifest)",
                    stacklevel=2,
                )
        parity = None if verify is None else verify(tmps)
        manifests = {}
        for graph in graphs:
            manifests[graph.role] = build_manifest(
                tmps[graph.role],
                model,
                opset=opset,
                checkpoint=checkpoint,
                weights=weights,
                export_seconds=results[graph.role].seconds,
                graph_checks=checks[graph.role],
                tensorrt_support=supports[graph.role],
                parity=parity,
                role=graph.role,
                extra=graph.extra,
            ) | {"model": graph.file}
    # Every file is in place; their manifests follow (each written atomically).
    return {
        graph.role: Exported(
            graph.role,
            paths[graph.role],
            write_manifest(manifest_path_for(paths[graph.role]), manifests[graph.role]),
            results[graph.role],
            checks[graph.role],
            supports[graph.role],
        )
        for graph in graphs
    }
