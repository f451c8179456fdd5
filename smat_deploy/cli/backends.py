"""``smat-deploy backends``: the runtime registry, so ``--backend`` and ``--backend-option`` are discoverable."""

from __future__ import annotations

from typing import Annotated

import typer

from smat_deploy._table import format_table
from smat_deploy.cli._output import print_json
from smat_deploy.runtime import describe_backends

EPILOG = """Examples:

  smat-deploy backends

  smat-deploy backends --json

A backend opens the engines whose file types it lists; --backend NAME picks one where several can
(an .onnx file: onnxruntime by default, or openvino), and --backend-option KEY=VALUE passes one of
its options (repeatable), e.g.:

  smat-deploy matte photo.jpg --engine export/smat.onnx --backend onnxruntime --backend-option threads=2 -o a.png
"""


def backends_command(
    json_output: Annotated[bool, typer.Option("--json", help="Print the registry as JSON.")] = False,
) -> None:
    """List the runtime backends: file types, devices, options, and whether each can run here."""
    rows = describe_backends()
    if json_output:
        print_json("backends", {"backends": rows})
        return
    table = [
        {
            "backend": row["backend"],
            "file_types": ", ".join(row["file_types"]),
            "devices": ", ".join(row["devices"]),
            "options": ", ".join(row["options"]) or "-",
            "here": "available" if row["available"] else "unavailable",
        }
        for row in rows
    ]
    typer.echo(format_table(table))
    for row in rows:
        typer.echo(f"\n{row['backend']}: {row['summary']}")
        width = max((len(name) for name in row["options"]), default=0)
        for name, help_text in row["options"].items():
            typer.echo(f"  --backend-option {name.ljust(width)}=...  {help_text}")
        if not row["available"]:
            typer.echo(f"  unavailable here: {row['reason']}")
