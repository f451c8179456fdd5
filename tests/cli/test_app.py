"""The ``smat-deploy`` entry point itself: version, help, and every command registered."""

from smat_deploy import __version__

COMMANDS = ("matte", "demo", "export", "calib-data", "build", "precision", "bench", "parity", "triton", "serve")
MORE = ("loadtest", "finetune")


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
