"""``export --interactive``: the encoder/decoder pair, its manifests, golden data, and what a failed check leaves."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from smat_deploy._files import sha256_of
from smat_deploy.contract import DECODER_INPUTS, EMBEDDING, EMBEDDING_NAMES
from smat_deploy.data.parity_sets import scan_photo_folder
from smat_deploy.errors import CheckFailed
from smat_deploy.export import interactive
from smat_deploy.images import load_image
from smat_deploy.model import load_model, weights_digest

pytestmark = pytest.mark.heavy


def _dims(value: onnx.ValueInfoProto) -> list:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


def _session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_the_pair_and_its_manifests_are_written_beside_the_whole_model(exported, finetuned_model):
    folder = exported["dir"]
    summary = exported["interactive"]
    assert summary["parity"]["passed"] and summary["parity"]["max_abs"] <= 1e-4
    manifests = {role: json.loads((folder / f"smat_{role}.json").read_text()) for role in ("encoder", "decoder")}
    digest = weights_digest(finetuned_model)
    for role, partner in (("encoder", "smat_decoder.onnx"), ("decoder", "smat_encoder.onnx")):
        manifest = manifests[role]
        assert manifest["pair"] == {"role": role, "partner": partner, "weights_sha256": digest}
        assert manifest["source"]["weights_sha256"] == digest
        assert manifest["sha256"] == sha256_of(folder / f"smat_{role}.onnx")
        assert all(check["passed"] for check in manifest["graph_checks"])
    assert json.loads((folder / "smat.json").read_text())["source"]["weights_sha256"] == digest


def test_the_files_declare_the_contract_io(exported):
    encoder = onnx.load(exported["dir"] / "smat_encoder.onnx", load_external_data=False)
    decoder = onnx.load(exported["dir"] / "smat_decoder.onnx", load_external_data=False)
    assert [(v.name, _dims(v)) for v in encoder.graph.input] == [("image", ["batch", 3, "height", "width"])]
    assert [(v.name, _dims(v)) for v in encoder.graph.output] == [(s["name"], s["shape"]) for s in EMBEDDING]
    assert [(v.name, _dims(v)) for v in decoder.graph.input] == [(s["name"], s["shape"]) for s in DECODER_INPUTS]
    assert [(v.name, _dims(v)) for v in decoder.graph.output] == [("alpha", ["batch", 1, "height", "width"])]


def _whole_and_pair(folder, image: np.ndarray, prompt: np.ndarray, state: np.ndarray):
    embedding = _session(folder / "smat_encoder.onnx").run(list(EMBEDDING_NAMES), {"image": image})
    feed = dict(zip(EMBEDDING_NAMES, embedding, strict=True)) | {"prompt": prompt, "state": state}
    pair = _session(folder / "smat_decoder.onnx").run(["alpha"], feed)[0]
    whole = _session(folder / "smat.onnx").run(["alpha"], {"image": image, "prompt": prompt, "state": state})[0]
    return whole, pair


def test_the_pair_matches_the_whole_model_on_a_held_out_photo(exported, finetuned_model, shared_photos):
    pairs, _ = scan_photo_folder(shared_photos)
    photo = next(photo for photo, alpha in pairs if alpha is not None)  # a photo with a ground-truth alpha
    rgb = load_image(photo, max_side=400)  # a CPU-sized photo
    image = torch.from_numpy(np.ascontiguousarray(rgb, np.float32)).permute(2, 0, 1)[None]
    h, w = image.shape[-2:]
    prompt = torch.zeros(1, 1, h, w)
    prompt[..., int(h * 0.4) : int(h * 0.6), int(w * 0.4) : int(w * 0.6)] = 1
    state = torch.ones(1, 1)
    whole, pair = _whole_and_pair(exported["dir"], image.numpy(), prompt.numpy(), state.numpy())
    with torch.inference_mode():
        reference = finetuned_model(image, prompt, state).numpy()
    assert reference.std() > 0.02  # a real matte
    assert np.abs(pair - reference).max() <= 1e-4
    assert np.abs(pair - whole).max() <= 1e-4


def test_golden_data_for_both_halves_reproduces(exported):
    from polygraphy.comparator import RunResults
    from polygraphy.json import load_json

    golden = exported["dir"] / "golden"
    for role in ("encoder", "decoder"):
        feeds = load_json(str(golden / role / "inputs.json"))
        results = RunResults.load(str(golden / role / "outputs.json"))
        expected = results[0][1]
        session = _session(exported["dir"] / f"smat_{role}.onnx")
        assert len(feeds) == len(expected) == 8
        for feed, iteration in zip(feeds[:3], expected[:3], strict=True):
            names = list(iteration.keys())
            got = session.run(names, feed)
            for name, value in zip(names, got, strict=True):
                want = iteration[name]
                scale = max(1.0, float(np.abs(want).max()))
                assert np.abs(value - want).max() <= 1e-4 * scale, (role, name)


def test_a_decoder_from_other_weights_fails_the_check_and_keeps_the_old_pair(tmp_path, finetuned_model, monkeypatch):
    folder = tmp_path / "out"
    folder.mkdir()
    for name in ("smat_encoder.onnx", "smat_decoder.onnx"):
        (folder / name).write_bytes(b"the previous " + name.encode())
    other = load_model(seed=1)
    real_export_decoder = interactive.export_decoder
    monkeypatch.setattr(
        interactive, "export_decoder", lambda model, output, opset: real_export_decoder(other, output, opset=opset)
    )
    cases = interactive.standard_cases()[:2]
    monkeypatch.setattr(interactive, "standard_cases", lambda: cases)
    with pytest.raises(CheckFailed, match="interactive pair parity failed"):
        interactive.export_pair(finetuned_model, folder, checkpoint=None, weights="fine-tuned")
    assert sorted(p.name for p in folder.iterdir()) == ["smat_decoder.onnx", "smat_encoder.onnx"]
    assert (folder / "smat_encoder.onnx").read_bytes() == b"the previous smat_encoder.onnx"
    assert (folder / "smat_decoder.onnx").read_bytes() == b"the previous smat_decoder.onnx"


def test_export_interactive_json_summary_lists_the_pair(exported):
    summary = exported["interactive"]
    assert summary["encoder"].endswith("smat_encoder.onnx") and summary["decoder"].endswith("smat_decoder.onnx")
    rows = summary["parity"]["cases"]
    assert len(rows) == 8 and all(r["pass"] for r in rows)
    # The per-half figures are measured, not copied: the encoder's (relative) and decoder's differ per case.
    assert len({r["encoder_rel_max"] for r in rows}) > 1 and len({r["decoder_max_abs"] for r in rows}) > 1
