"""The package's layers, checked from the source: module-level imports only go down the pipeline.

The order is the one docs/architecture.md draws: contract and the foundation, data, model, export,
engines, runtime, then evaluation/serve/train, apps and cli. An import inside a function (a lazy
import, run only when that code runs) may reach a layer beside or above for a backend's optional
package, but never at import time.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "smat_deploy"
#: Layer of each top-level module or subpackage, lowest first; modules of one layer may import each other.
LAYERS = {
    "contract": 0,
    "errors": 1,
    "pair": 1,
    "_files": 1,
    "_table": 1,
    "_ort": 1,
    "metrics": 1,
    "images": 2,
    "upsample": 2,
    "prompts": 3,
    "data": 4,
    "model": 5,
    "export": 6,
    "contract_cpp": 6,
    "engines": 7,
    "runtime": 8,
    "cpp": 8,
    "evaluation": 9,
    "serve": 9,
    "train": 9,
    "apps": 10,
    "cli": 11,
    "__main__": 12,
}
HEAVY = ("torch", "timm", "torchvision", "onnxscript", "modelopt", "polygraphy", "tensorrt", "openvino")


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def _layer(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0].removesuffix(".py")


def _module_level_imports(path: Path) -> list[str]:
    """Absolute module names imported outside any function (``from smat_deploy import x`` -> ``smat_deploy.x``)."""
    names = []
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        statements = [node]
        if isinstance(node, ast.If | ast.Try):  # guarded imports still run at import time
            statements = list(ast.walk(node))
        for statement in statements:
            if isinstance(statement, ast.Import):
                names.extend(alias.name for alias in statement.names)
            elif isinstance(statement, ast.ImportFrom) and statement.module and not statement.level:
                if statement.module == "smat_deploy":
                    names.extend(f"smat_deploy.{alias.name}" for alias in statement.names)
                else:
                    names.append(statement.module)
    return names


def test_every_top_level_module_has_a_layer():
    found = {_layer(path) for path in _modules()} - {"__init__"}
    assert found <= LAYERS.keys(), f"add {sorted(found - LAYERS.keys())} to LAYERS (and to docs/architecture.md)"


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_module_level_imports_go_down_the_layers(path):
    here = _layer(path)
    if here == "__init__":
        return  # the package's face: names handed on lazily (checked below)
    upward = []
    for name in _module_level_imports(path):
        parts = name.split(".")
        if parts[0] != "smat_deploy" or len(parts) < 2 or parts[1] in ("__version__",):
            continue
        target = parts[1]
        if target in LAYERS and LAYERS[target] > LAYERS[here]:
            upward.append(name)
    assert not upward, f"{path.relative_to(PACKAGE)} imports upward at import time: {upward}"


def test_the_contract_imports_nothing_from_the_project_nor_outside_the_standard_library():
    imports = _module_level_imports(PACKAGE / "contract.py")
    assert imports and all(
        name.split(".")[0] in ("__future__", "json", "os", "collections", "dataclasses", "pathlib") for name in imports
    ), imports


@pytest.mark.parametrize(
    "path", [*sorted((PACKAGE / "runtime").glob("*.py")), PACKAGE / "__init__.py"], ids=lambda p: p.name
)
def test_the_runtime_imports_no_heavy_package_at_import_time(path):
    heavy = [name for name in _module_level_imports(path) if name.split(".")[0] in HEAVY]
    model_side = [
        name
        for name in _module_level_imports(path)
        if name.split(".")[:2] in (["smat_deploy", "model"], ["smat_deploy", "export"], ["smat_deploy", "engines"])
    ]
    assert not heavy and not model_side, (heavy, model_side)
