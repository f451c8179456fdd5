"""The C++ library (``cpp/``) built for the tests: the plain build in ``cpp/build`` (what ``make cpp`` makes) and
an AddressSanitizer + UndefinedBehaviorSanitizer build in ``cpp/build-asan``. Building is incremental: a
fresh clone compiles once (about a minute on two cores), later runs only relink what changed."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import pytest

from smat_deploy.cpp import load_library

REPO = Path(__file__).resolve().parents[2]
CPP = REPO / "cpp"


def build(folder: str, *extra: str) -> Path:
    """Configure and build ``cpp/`` into ``cpp/<folder>``; a failure fails the test with the compiler's output."""
    out = CPP / folder
    configure = [
        "cmake",
        "-S",
        str(CPP),
        "-B",
        str(out),
        "-DCMAKE_BUILD_TYPE=Release",
        f"-DSMAT_PYTHON={sys.executable}",
        *extra,
    ]
    for command in (configure, ["cmake", "--build", str(out), "-j", str(os.cpu_count() or 2)]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
        if result.returncode != 0:
            pytest.fail(f"{' '.join(command)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return out


@pytest.fixture(scope="session")
def cpp_build() -> Path:
    return build("build")


@pytest.fixture(scope="session")
def libsmat(cpp_build) -> ctypes.CDLL:
    return load_library(cpp_build / "libsmat.so")


def run_command(command: list, timeout: int = 600) -> subprocess.CompletedProcess:
    """A program run to its end with its output captured (a failure is the test's to judge)."""
    return subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="session")
def smat_matte(cpp_build):
    """``smat_matte(*args)``: the built example program, run."""
    return lambda *args, timeout=600: run_command([cpp_build / "smat_matte", *args], timeout)


@pytest.fixture(scope="session")
def python_matte():
    """``python_matte(*args)``: ``smat-deploy matte`` of this checkout, run in its own process."""
    return lambda *args, timeout=600: run_command([sys.executable, "-m", "smat_deploy", "matte", *args], timeout)
