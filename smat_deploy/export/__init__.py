"""PyTorch -> ONNX: the graph module, the exporter, graph checks, parity, golden data, manifest."""

from smat_deploy.contract import INPUT_NAMES, OUTPUT_NAMES
from smat_deploy.export.graph_model import GraphSMat
from smat_deploy.export.onnx_export import DEFAULT_OPSET, MIN_OPSET, export_onnx
from smat_deploy.export.pipeline import ONNX_NAME, ExportReport, export_float32

__all__ = [
    "DEFAULT_OPSET",
    "INPUT_NAMES",
    "MIN_OPSET",
    "ONNX_NAME",
    "OUTPUT_NAMES",
    "ExportReport",
    "GraphSMat",
    "export_float32",
    "export_onnx",
]
