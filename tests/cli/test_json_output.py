"""``--json``: strict JSON (no NaN or Infinity), with the schema key naming the command and version."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from smat_deploy.cli._output import json_document


def strict_loads(text: str) -> dict:
    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_non_finite_numbers_become_null_and_the_schema_comes_first():
    payload = {
        "p50_ms": math.nan,
        "ratio": math.inf,
        "rows": [{"x": np.float32("nan"), "n": np.int64(3), "ok": np.bool_(True)}],
        "alpha": np.array([0.5, -math.inf]),
        "path": Path("a/b.png"),
    }
    text = json_document("bench", payload)
    document = strict_loads(text)
    assert next(iter(document)) == "schema" and document["schema"] == "smat-deploy/bench/1"
    assert document["p50_ms"] is None and document["ratio"] is None
    assert document["rows"] == [{"x": None, "n": 3, "ok": True}]
    assert document["alpha"] == [0.5, None] and document["path"] == "a/b.png"


def test_a_payload_may_not_bring_its_own_schema():
    with pytest.raises(ValueError, match="schema"):
        json_document("bench", {"schema": 2})


def test_commands_print_strict_json_with_their_schema(run_cli, tmp_path, tiny_onnx):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.full((20, 24, 3), 128, np.uint8)).save(photo)
    matte = run_cli("matte", photo, "--engine", tiny_onnx, "-o", tmp_path / "a.png", "--json")
    assert matte.code == 0, matte.stderr
    assert strict_loads(matte.stdout)["schema"] == "smat-deploy/matte/1"
    backends = run_cli("backends", "--json")
    document = strict_loads(backends.stdout)
    assert document["schema"] == "smat-deploy/backends/1"
    assert [row["backend"] for row in document["backends"]] == ["torch", "onnxruntime", "openvino", "tensorrt"]
    calib = run_cli(
        "calib-data", "-o", tmp_path / "calib", "--synthetic", "1", "--no-builtin-photos", "--size", "28", "--json"
    )
    assert calib.code == 0, calib.stderr
    assert strict_loads(calib.stdout)["schema"] == "smat-deploy/calib-data/1"


def test_every_json_print_goes_through_the_helper():
    """No command formats JSON itself: ``json.dumps`` appears only in ``cli/_output.py``."""
    cli = Path(json_document.__code__.co_filename).parent
    for path in cli.glob("*.py"):
        if path.name != "_output.py":
            assert "json.dumps" not in path.read_text(), path.name
