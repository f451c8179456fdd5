"""The base install (no PyTorch): the command line starts, ONNX engines run, and torch commands say what they need.

Each case runs ``python -m smat_deploy`` in a subprocess whose import system refuses torch, timm and
torchvision as if they were not installed, and records every attempt to import them: the ONNX path
must not even try.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from PIL import Image

BLOCKED = ("torch", "timm", "torchvision")

RUNNER = textwrap.dedent(
    f"""
    import importlib.abc, os, runpy, sys

    BLOCKED = {BLOCKED!r}

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name.split(".")[0] in BLOCKED:
                with open(os.environ["SMAT_BLOCKED_LOG"], "a") as log:
                    log.write(name + "\\n")
                raise ModuleNotFoundError(f"No module named {{name!r}} (blocked)", name=name)
            return None

    sys.meta_path.insert(0, Block())
    sys.argv[0] = "smat-deploy"
    runpy.run_module("smat_deploy", run_name="__main__", alter_sys=True)
    """
)


@pytest.fixture
def without_torch(tmp_path):
    """Run ``smat-deploy ARGS`` without torch; returns ``(completed process, modules it tried to import)``."""
    runner = tmp_path / "without_torch.py"
    runner.write_text(RUNNER)
    log = tmp_path / "blocked.log"

    def run(*args: object) -> tuple[subprocess.CompletedProcess, list[str]]:
        log.write_text("")
        result = subprocess.run(
            [sys.executable, str(runner), *map(str, args)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env={**_environment(), "SMAT_BLOCKED_LOG": str(log)},
        )
        return result, log.read_text().split()

    return run


def _environment() -> dict[str, str]:
    import os

    return {key: value for key, value in os.environ.items() if key != "SMAT_DEPLOY_DEBUG"}


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_matte_with_an_onnx_engine_imports_no_torch(without_torch, tmp_path, tiny_onnx):
    photo = tmp_path / "photo.png"
    Image.fromarray((np.random.default_rng(0).random((30, 40, 3)) * 255).astype(np.uint8)).save(photo)
    alpha = tmp_path / "alpha.png"
    result, tried = without_torch("matte", photo, "--engine", tiny_onnx, "--point", "10,10", "-o", alpha, "--json")
    assert result.returncode == 0, result.stderr
    assert tried == []  # not even a guarded attempt
    summary = json.loads(result.stdout)
    assert summary["schema"] == "smat-deploy/matte/1" and summary["engine"]["backend"] == "onnxruntime"
    assert np.asarray(Image.open(alpha)).shape == (30, 40)


def test_help_lists_every_command_and_marks_those_that_need_torch(without_torch):
    result, _ = without_torch("--help")  # looks for torch (to mark commands) without importing it
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stdout.split())
    for command in ("matte", "export", "bench", "backends", "serve"):
        assert command in text
    assert "(unavailable here: needs torch and timm)" in text


def test_a_command_that_needs_torch_says_so_in_one_line(without_torch):
    for args in (("export", "-o", "somewhere"), ("export", "--help")):
        result, _ = without_torch(*args)
        assert result.returncode == 2
        assert _one_error_line(result) == (
            "error: smat-deploy export needs torch and timm (pip install 'smat-deploy[export]')"
        )


def test_the_torch_engine_without_torch_is_one_line(without_torch, tmp_path):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(photo)
    result, _ = without_torch("matte", photo, "-o", tmp_path / "alpha.png")
    assert result.returncode == 2
    assert "needs torch" in _one_error_line(result)


def test_the_page_serves_an_onnx_pair_without_torch(tmp_path):
    """``smat-deploy app`` on an exported pair: the page, a photo and a click, with torch refused at import."""
    import signal
    import urllib.request

    from tiny_pair import make_tiny_pair

    make_tiny_pair(tmp_path / "pair")
    runner = tmp_path / "without_torch.py"
    runner.write_text(RUNNER)
    log = tmp_path / "blocked.log"
    log.write_text("")
    process = subprocess.Popen(
        [sys.executable, str(runner), "app", "--engine", str(tmp_path / "pair"), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**_environment(), "SMAT_BLOCKED_LOG": str(log)},
    )
    try:
        first = process.stdout.readline()
        assert first.startswith("serving the matting page on http://127.0.0.1:"), first + process.stderr.read()
        url = first.split()[-1]
        while not process.stdout.readline().startswith("ready"):
            pass
        buffer = io.BytesIO()
        Image.fromarray(np.zeros((28, 42, 3), np.uint8)).save(buffer, format="PNG")
        request = urllib.request.Request(f"{url}api/photo?name=p.png", data=buffer.getvalue(), method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            session = json.loads(response.read())["session"]
        body = json.dumps({"session": session, "prompts": [{"type": "point", "x": 5, "y": 6, "radius": 0}]})
        request = urllib.request.Request(f"{url}api/matte", data=body.encode(), method="POST")
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        assert answer["mode"] == "interactive" and answer["prompt"] == "point"
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "stopped: 1 photos, 1 mattes, 0 refused" in stderr
    assert log.read_text().split() == []  # not even a guarded attempt
