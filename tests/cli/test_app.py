"""The ``smat-deploy`` entry point itself: version, help, the command table, and exit statuses."""

import ast
import importlib
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

from smat_deploy import __version__

app_module = importlib.import_module("smat_deploy.cli.app")  # the package's `app` attribute is the Typer object

COMMANDS = ("matte", "demo", "export", "calib-data", "build", "precision", "bench", "parity", "triton", "serve")
MORE = ("loadtest", "finetune", "backends", "app", "sizes", "upsampling", "cpp-bench", "fusion-check")
CLI_DIR = Path(app_module.__file__).parent


def test_version_prints_and_exits_zero(run_cli):
    result = run_cli("--version")
    assert result.code == 0 and result.stdout.strip() == f"smat-deploy {__version__}"


def test_help_lists_every_command_and_each_has_an_example(run_cli):
    listing = run_cli("--help")
    assert listing.code == 0
    for command in (*COMMANDS, *MORE):
        assert command in listing.stdout
        result = run_cli(command, "--help")
        assert result.code == 0 and "Example" in result.stdout, command
        example = result.stdout[result.stdout.index("Example") :]
        assert f"smat-deploy {command}" in example, command  # an example of this very command


def test_the_table_lists_every_command_once_and_its_help_is_the_functions_docstring():
    assert set(app_module.COMMANDS) == {*COMMANDS, *MORE}
    for name, spec in app_module.COMMANDS.items():
        module_name, _, function_name = spec.target.partition(":")
        function = getattr(importlib.import_module(module_name), function_name)
        assert inspect.getdoc(function).splitlines()[0] == spec.help, name


def test_no_command_module_imports_the_app():
    """Commands are plain functions named in the table: no import circle through ``smat_deploy.cli.app``."""
    for path in CLI_DIR.glob("*.py"):
        if path.name in ("app.py", "__init__.py"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                names = {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
                assert not names & {"smat_deploy.cli.app", "smat_deploy.cli"}, path.name


def test_help_imports_no_command_module(monkeypatch, run_cli):
    for module in [m for m in sys.modules if m.startswith("smat_deploy.cli.") and m != "smat_deploy.cli.app"]:
        monkeypatch.delitem(sys.modules, module)
    assert run_cli("--help").code == 0
    loaded = [m for m in sys.modules if m.startswith("smat_deploy.cli.") and m != "smat_deploy.cli.app"]
    assert loaded == []


def test_exit_statuses_are_documented_in_the_root_help(run_cli):
    text = " ".join(run_cli("--help").stdout.split())
    for status in (0, 1, 2, 70, 130):
        assert f"{status} " in text.split("Exit status:")[1]


def test_a_missing_optional_package_is_one_line_and_exit_2(monkeypatch, run_cli):
    monkeypatch.setitem(app_module.COMMANDS, "export", app_module.Command("x:y", "Export.", ("no_such_package_x",)))
    monkeypatch.setitem(app_module.OPTIONAL_PACKAGES, "no_such_package_x", ("nspx", "pip install nspx"))
    result = run_cli("export", "--anything", "goes")
    assert result.code == 2
    result.expect_error("smat-deploy export needs nspx (pip install nspx)")
    assert "(unavailable here: needs nspx)" in " ".join(run_cli("--help").stdout.split())


def test_an_optional_package_missing_at_run_time_is_one_line_and_exit_2(monkeypatch, run_cli):
    from smat_deploy.cli import backends

    def needs_openvino():
        raise ModuleNotFoundError("No module named 'openvino'", name="openvino")

    monkeypatch.setattr(backends, "describe_backends", needs_openvino)
    result = run_cli("backends")
    assert result.code == 2
    result.expect_error("smat-deploy backends needs openvino (pip install 'smat-deploy[openvino]')")


@pytest.mark.parametrize(
    ("error", "status", "line"),
    [
        (RuntimeError("boom\nsecond line"), 70, "error: unexpected RuntimeError: boom (set SMAT_DEPLOY_DEBUG=1"),
        (ModuleNotFoundError("No module named 'smat_deploy.gone'", name="smat_deploy.gone"), 70, "error: unexpected"),
        (KeyboardInterrupt(), 130, "error: interrupted"),
    ],
)
def test_unexpected_errors_and_interrupts_have_their_own_status(monkeypatch, run_cli, error, status, line):
    from smat_deploy.cli import backends

    def fail():
        raise error

    monkeypatch.delenv("SMAT_DEPLOY_DEBUG", raising=False)
    monkeypatch.setattr(backends, "describe_backends", fail)
    result = run_cli("backends")
    assert result.code == status
    assert result.stderr.startswith(line) and len(result.stderr.strip().splitlines()) == 1


def test_sigterm_under_python_m_exits_130_even_inside_code_run_from_a_string(tmp_path):
    # torch and dataclasses run generated source with exec(); a KeyboardInterrupt escaping such code makes
    # `python -m` die by SIGINT at exit (return code -2) even after main() caught it and chose 130.
    probe = tmp_path / "sigterm_probe"
    probe.mkdir()
    (probe / "__main__.py").write_text(
        "import importlib\n"
        "cli = importlib.import_module('smat_deploy.cli.app')\n"
        "def command(**_):\n"
        "    exec('import os, signal\\nos.kill(os.getpid(), signal.SIGTERM)\\nfor _ in range(10**7): pass')\n"
        "    raise AssertionError('SIGTERM did not interrupt')\n"
        "cli.app = command\n"
        "cli.main()\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "sigterm_probe"], capture_output=True, text=True, env=env, timeout=60)
    assert (done.returncode, done.stderr) == (130, "error: interrupted\n")


def test_usage_errors_are_exit_2(run_cli):
    assert run_cli("matte", "--no-such-option").code == 2
    assert run_cli("no-such-command").code == 2


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("matte", "--no-such-option"), "error: No such option: --no-such-option"),
        (("matte",), "error: Missing argument 'image'."),
        (("bench", "--iters", "many"), "error: Invalid value for '--iters'"),
        (("no-such-command",), "error: No such command 'no-such-command'."),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(run_cli, args, expected):
    result = run_cli(*args)
    lines = result.stderr.strip().splitlines()
    assert result.code == 2 and len(lines) == 1, result.stderr
    assert lines[0].startswith(expected) and "--help" in lines[0]
