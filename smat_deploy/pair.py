"""The interactive pair's files, found and checked in one place.

``smat_encoder*.onnx`` (or ``.plan``, from ``smat-deploy build --interactive``) runs once per photo,
``smat_decoder*`` once per prompt. Two files only work together when they were made together, so
before anything runs :func:`find_pair` reads both sidecar manifests and checks that:

- each file has a manifest, and the manifest gives it its role (``encoder``, ``decoder``; a whole model
  passed where an encoder is expected says so);
- the encoder names the decoder as its partner, and the decoder names the encoder back;
- both were exported from the same weights (``weights_sha256``);
- both have one precision, the one asked for;
- their declared inputs and outputs are their role's (:data:`smat_deploy.contract.ROLES`).

``Predictor.open``, ``smat-deploy build --interactive``, ``serve``, ``triton``, ``app`` and ``matte`` all
call it, so a bad pair gets the same one-line error from each. Standard library only: every layer may use it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from smat_deploy.contract import (
    PAIR_ROLES,
    ROLES,
    canonical_precision,
    manifest_path_for,
    manifest_role,
    pair_file,
    read_manifest,
)
from smat_deploy.errors import SmatError

#: File kinds a pair comes in: ONNX (ONNX Runtime, OpenVINO) and TensorRT engines.
PAIR_SUFFIXES = (".onnx", ".plan")
#: What to do about a pair that does not belong together.
REMAKE = "export both again with smat-deploy export --interactive"


@dataclass(frozen=True)
class Pair:
    """An encoder and its decoder, checked to belong together (see the module's text)."""

    encoder: Path
    decoder: Path
    precision: str
    weights_sha256: str
    manifests: dict[str, dict] = field(repr=False, compare=False)

    @property
    def suffix(self) -> str:
        return self.encoder.suffix.lower()

    @property
    def folder(self) -> Path:
        return self.encoder.parent

    def path(self, role: str) -> Path:
        return self.encoder if role == "encoder" else self.decoder

    def items(self) -> tuple[tuple[str, Path], ...]:
        return (("encoder", self.encoder), ("decoder", self.decoder))


def different_weights(
    first: str, second: str, first_key: object, second_key: object, remedy: str = REMAKE
) -> SmatError:
    """The one message for two artifacts exported from different weights."""
    return SmatError(
        f"{first} and {second} were exported from different weights "
        f"(weights_sha256 {str(first_key)[:12]} vs {str(second_key)[:12]}): {remedy}"
    )


def _manifest(path: Path) -> dict:
    sidecar = manifest_path_for(path)
    try:
        manifest = read_manifest(sidecar)
    except ValueError as err:
        raise SmatError(f"{sidecar} is not valid JSON: {err}") from None
    except OSError as err:
        raise SmatError(f"cannot read {sidecar}: {err.strerror}") from None
    if not isinstance(manifest, dict):
        raise SmatError(f"{path.name} has no manifest ({sidecar.name}): the pair cannot be verified")
    return manifest


def pair_role(path: str | os.PathLike[str]) -> str | None:
    """``"encoder"`` or ``"decoder"`` when ``path``'s manifest makes it a half of the pair, else None."""
    path = Path(path)
    try:
        manifest = read_manifest(manifest_path_for(path))
    except (OSError, ValueError):
        return None
    role = manifest_role(manifest) if isinstance(manifest, dict) else None
    return role if role in PAIR_ROLES else None


def _encoder_in(folder: Path, precision: str, suffix: str | None) -> Path:
    try:
        stem = Path(pair_file("encoder", precision)).stem
    except KeyError:
        raise SmatError(f"unknown precision {precision!r}") from None
    suffixes = PAIR_SUFFIXES if suffix is None else (suffix,)
    found = [folder / f"{stem}{s}" for s in suffixes if (folder / f"{stem}{s}").is_file()]
    if not found:
        names = " or ".join(f"{stem}{s}" for s in suffixes)
        raise SmatError(
            f"{folder} has no {names}: make the pair with smat-deploy export --interactive -o {folder}"
            + (" (and smat-deploy build --interactive for TensorRT engines)" if ".plan" in suffixes else "")
        )
    if len(found) > 1:
        raise SmatError(f"{folder} holds {stem}.onnx and {stem}.plan: give the encoder file of the pair to use")
    return found[0]


def _check_role(path: Path, manifest: dict, role: str) -> None:
    found = manifest_role(manifest)
    if found == role:
        return
    if found == "whole":
        raise SmatError(f"{path.name} is a whole model, not the pair's {role}: give the pair's encoder or its folder")
    if found in PAIR_ROLES:
        raise SmatError(f"{path.name} is the pair's {found}, not its {role}: give the pair's encoder or its folder")
    raise SmatError(f"{path.name} is not the {role} of an interactive pair (its manifest names no pair role)")


def _check_io(path: Path, manifest: dict, role: str) -> None:
    """The manifest's declared I/O names against the role's (files without a declaration are checked on opening)."""
    declared = {key: manifest.get(key) for key in ("inputs", "outputs")}
    if not all(isinstance(specs, list) for specs in declared.values()):
        return
    contract = ROLES[role]
    for key, wanted in (("inputs", contract.input_names), ("outputs", contract.output_names)):
        names = [spec.get("name") for spec in declared[key] if isinstance(spec, dict)]
        if sorted(names) != sorted(wanted):
            raise SmatError(f"{path.name} declares {key} {names}, but the pair's {role} has {list(wanted)}")


def find_pair(source: str | os.PathLike[str], precision: str | None = None, suffix: str | None = None) -> Pair:
    """The pair in folder ``source`` (``precision``'s file names, default float32; ``.onnx`` or ``.plan``, or
    ``suffix``) or the pair whose encoder file ``source`` is, checked as the module's text says."""
    source = Path(source)
    if source.is_dir():
        encoder = _encoder_in(source, canonical_precision(precision or "float32"), suffix)
    elif source.is_file():
        encoder = source
    else:
        raise SmatError(f"no such folder or file: {source}")
    manifests = {"encoder": _manifest(encoder)}
    _check_role(encoder, manifests["encoder"], "encoder")
    partner = str((manifests["encoder"].get("pair") or {}).get("partner"))
    decoder = encoder.parent / partner
    if not decoder.is_file():
        raise SmatError(f"{encoder.name}'s decoder {decoder.name} is not beside it")
    manifests["decoder"] = _manifest(decoder)
    _check_role(decoder, manifests["decoder"], "decoder")
    named = (manifests["decoder"].get("pair") or {}).get("partner")
    if named != encoder.name:
        raise SmatError(f"{decoder.name} names {named} as its encoder, not {encoder.name}: {REMAKE}")
    keys = {role: (m.get("pair") or {}).get("weights_sha256") for role, m in manifests.items()}
    if keys["encoder"] != keys["decoder"] or not keys["encoder"]:
        raise different_weights(encoder.name, decoder.name, keys["encoder"], keys["decoder"])
    precisions = {role: canonical_precision(str(m.get("precision", "float32"))) for role, m in manifests.items()}
    if precisions["encoder"] != precisions["decoder"]:
        raise SmatError(
            f"{encoder.name} is {precisions['encoder']} but its decoder {decoder.name} is {precisions['decoder']}: "
            f"{REMAKE}"
        )
    if precision is not None and precisions["encoder"] != canonical_precision(precision):
        raise SmatError(f"{encoder.name} is the {precisions['encoder']} pair, not {canonical_precision(precision)}")
    for role, path in (("encoder", encoder), ("decoder", decoder)):
        _check_io(path, manifests[role], role)
    return Pair(encoder, decoder, precisions["encoder"], str(keys["encoder"]), manifests)


def check_same_weights(whole: str | os.PathLike[str] | None, weights_sha256: str, remedy: str) -> None:
    """Refuse a whole model exported from other weights than a pair's (the whole model's manifest records its
    ``source.weights_sha256``; a file without a manifest, a TensorRT plan or the torch engine cannot be checked)."""
    if whole is None:
        return
    try:
        manifest = read_manifest(manifest_path_for(whole)) or {}
    except (OSError, ValueError):
        return
    recorded = (manifest.get("source") or {}).get("weights_sha256") if isinstance(manifest, dict) else None
    if recorded and recorded != weights_sha256:
        raise different_weights(Path(whole).name, "the interactive pair", recorded, weights_sha256, remedy)
