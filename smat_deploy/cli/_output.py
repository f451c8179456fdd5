"""``--json`` output: the one place a command prints JSON, always valid and versioned.

Every document is an object whose first key is ``"schema": "smat-deploy/<command>/<version>"``, so a
script can tell which command wrote it and notice when its shape changes. Numbers that JSON cannot
hold (NaN, infinities: a latency that was never measured, a ratio to zero) become ``null``; numpy
scalars and arrays become plain numbers and lists; paths become strings. The document is written
with ``allow_nan=False``, so a bare ``NaN`` can never reach a strict parser.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import typer

#: The version of every command's JSON document; raise a command's own when its shape changes incompatibly.
SCHEMA_VERSION = 1


def schema_id(command: str, version: int = SCHEMA_VERSION) -> str:
    return f"smat-deploy/{command}/{version}"


def json_document(command: str, payload: Mapping[str, Any], version: int = SCHEMA_VERSION) -> str:
    """``payload`` as strict JSON text with the schema key first."""
    if "schema" in payload:
        raise ValueError(f"the {command} JSON payload already has a 'schema' key")
    document = {"schema": schema_id(command, version), **plain(payload)}
    return json.dumps(document, indent=2, allow_nan=False)


def print_json(command: str, payload: Mapping[str, Any], version: int = SCHEMA_VERSION) -> None:
    """Print ``payload`` as the command's JSON document on stdout."""
    typer.echo(json_document(command, payload, version))


def plain(value: Any) -> Any:
    """``value`` as JSON-ready Python: dicts, lists, str, int, finite float, bool, None."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [plain(item) for item in value]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, np.generic):
        return plain(value.item())
    if isinstance(value, enum.Enum):
        return plain(value.value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)
