"""One real export per test session, through the real command line, shared by the export tests."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> dict:
    """``smat-deploy export --save-golden`` on the built-in default weights; returns its JSON summary."""
    out = tmp_path_factory.mktemp("export")
    command = [sys.executable, "-m", "smat_deploy", "export", "--output-dir", str(out), "--save-golden", str(out / "golden")]
    result = subprocess.run([*command, "--json"], capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    summary["dir"] = Path(out)
    return summary
