"""The interactive pair, found and checked in one place (:mod:`smat_deploy.pair`), and every entry point that opens
a pair giving a bad one the same one-line refusal: ``Predictor.open``, ``build --interactive``, ``serve``, ``triton``,
``app`` and ``matte`` with several prompt files."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
from tiny_pair import make_tiny_pair

from smat_deploy.errors import SmatError
from smat_deploy.pair import check_same_weights, find_pair, pair_role
from smat_deploy.runtime import Predictor

PACKAGE = Path(__file__).resolve().parents[1] / "smat_deploy"


def _manifest(path: Path) -> dict:
    return json.loads(path.with_suffix(".json").read_text())


def _rewrite(path: Path, **changes) -> None:
    manifest = _manifest(path)
    for key, value in changes.items():
        if key in ("partner", "weights_sha256", "role") and "pair" in manifest:
            manifest["pair"][key] = value
        else:
            manifest[key] = value
    path.with_suffix(".json").write_text(json.dumps(manifest))


def test_a_good_pair_is_found_from_its_folder_or_its_encoder(tmp_path):
    encoder, decoder = make_tiny_pair(tmp_path)
    for source in (tmp_path, encoder):
        pair = find_pair(source)
        assert (pair.encoder, pair.decoder, pair.precision, pair.suffix) == (encoder, decoder, "float32", ".onnx")
        assert pair.weights_sha256 == "w" * 64
    assert pair_role(encoder) == "encoder" and pair_role(decoder) == "decoder"
    assert pair_role(tmp_path / "nothing.onnx") is None


def _bad_pairs(root: Path) -> dict[str, tuple[Path, str]]:
    """A folder per way a pair can be wrong, and the message every entry point must give."""
    cases = {}
    folder = root / "weights"
    make_tiny_pair(folder, weights=("a" * 64, "b" * 64))
    cases["other weights"] = (
        folder,
        "were exported from different weights (weights_sha256 aaaaaaaaaaaa vs bbbbbbbbbbbb)",
    )
    folder = root / "partner"
    make_tiny_pair(folder, decoder_partner="smat_encoder_old.onnx")
    cases["decoder names another encoder"] = (
        folder,
        "names smat_encoder_old.onnx as its encoder, not smat_encoder.onnx",
    )
    folder = root / "precisions"
    encoder, _ = make_tiny_pair(folder)
    _rewrite(encoder, precision="fp16")
    cases["mixed precisions"] = (folder, "smat_encoder.onnx is fp16 but its decoder smat_decoder.onnx is float32")
    folder = root / "half"
    _, decoder = make_tiny_pair(folder)
    decoder.unlink()
    cases["a missing half"] = (folder, "smat_encoder.onnx's decoder smat_decoder.onnx is not beside it")
    folder = root / "whole"
    encoder, _ = make_tiny_pair(folder)
    manifest = _manifest(encoder)
    manifest.pop("pair")
    manifest["role"] = "whole"
    encoder.with_suffix(".json").write_text(json.dumps(manifest))
    cases["a whole model as the encoder"] = (folder, "smat_encoder.onnx is a whole model, not the pair's encoder")
    folder = root / "manifest"
    encoder, _ = make_tiny_pair(folder)
    encoder.with_suffix(".json").unlink()
    cases["no manifest"] = (
        folder,
        "smat_encoder.onnx has no manifest (smat_encoder.json): the pair cannot be verified",
    )
    return cases


@pytest.fixture(scope="module")
def bad_pairs(tmp_path_factory) -> dict[str, tuple[Path, str]]:
    return _bad_pairs(tmp_path_factory.mktemp("bad-pairs"))


CASES = [
    "other weights",
    "decoder names another encoder",
    "mixed precisions",
    "a missing half",
    "a whole model as the encoder",
    "no manifest",
]


@pytest.mark.parametrize("case", CASES)
def test_every_bad_pair_is_refused_by_find_pair_and_predictor_open_with_one_message(bad_pairs, case):
    folder, message = bad_pairs[case]
    for call in (lambda: find_pair(folder), lambda: Predictor.open(folder, device="cpu")):
        with pytest.raises(SmatError) as caught:
            call()
        assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("case", CASES)
def test_build_serve_triton_app_and_matte_refuse_a_bad_pair_with_the_same_message(bad_pairs, case, run_cli, tmp_path):
    from smat_deploy.engines.tensorrt_build import check_pair_onnx
    from smat_deploy.serve.lifecycle import plan_sessions
    from smat_deploy.serve.model_repository import pair_io

    folder, message = bad_pairs[case]
    encoder = folder / "smat_encoder.onnx"
    for call in (
        lambda: check_pair_onnx(encoder),  # build --interactive, before TensorRT is asked for
        lambda: plan_sessions(str(folder), True),  # serve --sessions, before any engine loads
        lambda: pair_io(folder),  # triton --interactive
    ):
        with pytest.raises(SmatError) as caught:
            call()
        assert message in str(caught.value), call
    photo = tmp_path / "photo.png"
    from PIL import Image

    Image.new("RGB", (40, 30)).save(photo)
    prompts = []
    for name in ("a", "b"):
        (tmp_path / f"{name}.json").write_text(json.dumps([{"type": "box", "x0": 1, "y0": 1, "x1": 9, "y1": 9}]))
        prompts += ["--prompt", tmp_path / f"{name}.json"]
    run_cli("matte", photo, *prompts, "--engine", folder, "-o", tmp_path / "out").expect_error(message)
    run_cli("app", "--engine", folder, "--port", "0").expect_error(message)


def test_a_whole_model_from_other_weights_than_the_pair_is_refused_with_the_same_words(tmp_path):
    whole = tmp_path / "smat.onnx"
    whole.write_bytes(b"")
    whole.with_suffix(".json").write_text(json.dumps({"role": "whole", "source": {"weights_sha256": "c" * 64}}))
    with pytest.raises(SmatError, match=r"smat.onnx and the interactive pair were exported from different weights"):
        check_same_weights(whole, "d" * 64, "serve with --no-sessions")
    check_same_weights(whole, "c" * 64, "")  # the same weights: nothing to say
    check_same_weights("torch", "c" * 64, "")  # nothing to check it against


def test_a_folder_with_an_onnx_and_a_plan_encoder_asks_which(tmp_path):
    encoder, _ = make_tiny_pair(tmp_path)
    encoder.with_suffix(".plan").write_bytes(b"plan")
    with pytest.raises(SmatError, match=r"holds smat_encoder\.onnx and smat_encoder\.plan: give the encoder file"):
        find_pair(tmp_path)
    assert find_pair(tmp_path, suffix=".onnx").encoder == encoder


def _package_lines(pattern: str) -> list[str]:
    result = subprocess.run(
        ["grep", "-rn", "-E", pattern, str(PACKAGE), "--include=*.py"], capture_output=True, text=True
    )
    return [line for line in result.stdout.splitlines() if line.strip()]


def test_the_pairs_rules_and_the_different_weights_message_exist_once_in_the_package():
    message = _package_lines(r"were exported from different weights")  # the message itself, not prose about it
    assert [Path(line.split(":")[0]).name for line in message] == ["pair.py"]
    readers = {Path(line.split(":")[0]).name for line in _package_lines(r"get\(\"partner\"\)")}  # who reads partners
    assert readers == {"pair.py"}, readers


def test_one_place_makes_onnx_runtime_sessions():
    lines = _package_lines(r"InferenceSession\(")
    assert [re.sub(r":\d+:.*", "", line).rsplit("/", 1)[-1] for line in lines] == ["_ort.py"], lines
