"""The C++ test programs (ctest: smat_tests and the C example) on the real export, in the plain build and once
under AddressSanitizer, UndefinedBehaviorSanitizer and LeakSanitizer, which must report nothing."""

from __future__ import annotations

import os
import subprocess

import pytest
from conftest import CPP, build

pytestmark = pytest.mark.heavy


def _ctest(folder, models, extra_env=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "SMAT_TEST_MODELS": str(models), **(extra_env or {})}
    return subprocess.run(
        ["ctest", "--test-dir", str(folder), "--output-on-failure", "--timeout", "900"],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
        env=env,
    )


def test_ctest_passes_on_the_export(cpp_build, exported):
    result = _ctest(cpp_build, exported["dir"])
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-3000:]
    assert "100% tests passed" in result.stdout


def test_ctest_passes_under_the_sanitizers_with_no_report(exported):
    folder = build("build-asan", "-DSMAT_SANITIZE=ON", "-DCMAKE_BUILD_TYPE=RelWithDebInfo")
    result = _ctest(folder, exported["dir"], {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0:halt_on_error=1"})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    for report in ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:"):
        assert report not in output, output[-8000:]
    assert (CPP / "tests" / "lsan.supp").is_file()
