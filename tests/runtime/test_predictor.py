"""``Predictor``: embed a photo once, answer each prompt from the embedding, as ``Runtime`` would answer it."""

from __future__ import annotations

import json
import shutil
import threading

import numpy as np
import pytest
import torch

from smat_deploy import PhotoEmbedding, Predictor, Runtime, SmatError
from smat_deploy import prompts as P

pytestmark = pytest.mark.heavy

RNG = np.random.default_rng(7)
PHOTO = (RNG.random((90, 121, 3)) * 255).astype(np.uint8)
CLICKS = [
    [{"type": "point", "x": 30, "y": 20, "radius": 8}],
    [{"type": "point", "x": 90, "y": 60, "radius": 8}],
    [P.Box(10, 40, 70, 85)],
    None,  # automatic
]


@pytest.fixture(scope="module")
def pair(exported):
    return Predictor.open(exported["dir"], device="cpu")


@pytest.fixture(scope="module")
def whole(exported):
    return Runtime.open(exported["dir"] / "smat.onnx", device="cpu")


def test_one_embedding_answers_every_click_like_the_whole_model(pair, whole):
    embedding = pair.embed(PHOTO)
    assert isinstance(embedding, PhotoEmbedding) and (embedding.height, embedding.width) == (90, 121)
    answers, expected = [], []
    for click in CLICKS:
        alpha = pair.predict(embedding, click)
        assert isinstance(alpha, np.ndarray) and alpha.shape == (90, 121) and alpha.dtype == np.float32
        expected.append(whole(PHOTO, click))
        assert np.abs(alpha - expected[-1]).max() <= 1e-4
        answers.append(alpha)
    # Each click's answer is its own prompt's matte: nearer the whole model's answer for that prompt than for any other.
    for i, alpha in enumerate(answers):
        own = np.abs(alpha - expected[i]).max()
        assert all(own < np.abs(alpha - other).max() for j, other in enumerate(expected) if j != i)
    # 90x121 pads to 98x126: a 7x9 grid; the embedding's memory follows from the shapes alone (per token:
    # 384 features + 3 x 16 x 16 image16 + 96 x 4 x 4 detail2 + 256 x 2 x 2 fusion0 floats, plus the class token).
    assert embedding.nbytes == 4 * ((384 + 768 + 1536 + 1024) * 7 * 9 + 384)


def test_batches_masks_states_and_torch_inputs(pair, whole):
    batch = torch.rand(2, 3, 70, 56, generator=torch.Generator().manual_seed(3))
    embedding = pair.embed(batch)
    mask = torch.zeros(2, 1, 70, 56)
    mask[:, :, 20:40, 10:30] = 1
    for prompt, state in ((mask, None), (mask, torch.tensor([1.0, 0.0])), ([[], [P.Box(3, 3, 20, 20)]], None)):
        alpha = pair.predict(embedding, prompt, state)
        assert isinstance(alpha, torch.Tensor) and alpha.shape == (2, 1, 70, 56)
        assert (alpha - whole(batch, prompt, state)).abs().max() <= 1e-4
    assert pair(PHOTO, CLICKS[0]).shape == (90, 121)  # embed + predict in one call


def test_the_torch_predictor_is_the_reference_exactly(finetuned_checkpoint):
    predictor = Predictor.open(finetuned_checkpoint, device="cpu")
    reference = Runtime.open(finetuned_checkpoint, device="cpu")
    embedding = predictor.embed(PHOTO)
    assert predictor.backend == "torch" and embedding.device == "cpu"
    for click in CLICKS[:2]:
        assert np.array_equal(predictor.predict(embedding, click), reference(PHOTO, click))


def test_an_embedding_may_serve_several_threads_at_once(pair):
    embedding = pair.embed(PHOTO)
    expected = [pair.predict(embedding, click) for click in CLICKS]
    results: dict[int, list[np.ndarray]] = {}

    def work(index: int) -> None:
        results[index] = [pair.predict(embedding, click) for click in CLICKS]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert sorted(results) == [0, 1, 2, 3]
    for answers in results.values():
        assert all(np.array_equal(a, b) for a, b in zip(answers, expected, strict=True))


def test_bad_inputs_are_one_line_errors(pair, tmp_path):
    embedding = pair.embed(PHOTO)
    with pytest.raises(SmatError, match="prompt mask is 120x90 but the image is 121x90"):
        pair.predict(embedding, np.zeros((90, 120), np.float32))
    with pytest.raises(SmatError, match="needs a PhotoEmbedding"):
        pair.predict({"features": 0}, None)
    other = Predictor.open("torch", device="cpu", seed=3)
    with pytest.raises(SmatError, match="made by another model or engine"):
        pair.predict(other.embed(PHOTO), None)
    with pytest.raises(SmatError, match="made by another model or engine"):
        other.predict(embedding, None)
    with pytest.raises(
        SmatError,
        match=r"has no smat_encoder\.onnx or smat_encoder\.plan: make the pair with smat-deploy export --interactive",
    ):
        Predictor.open(tmp_path)
    with pytest.raises(SmatError, match="unknown device"):
        Predictor.open("torch", device="gpu")
    with pytest.raises(SmatError, match="Predictor source must be"):
        Predictor.open(42)


def _copy_pair(exported, folder):
    folder.mkdir()
    for name in ("smat_encoder.onnx", "smat_encoder.json", "smat_decoder.onnx", "smat_decoder.json"):
        shutil.copy(exported["dir"] / name, folder / name)
    return folder


def test_a_pair_from_different_weights_is_refused(exported, tmp_path):
    folder = _copy_pair(exported, tmp_path / "mixed")
    manifest_path = folder / "smat_decoder.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["pair"]["weights_sha256"] = "0" * 64  # what a decoder exported from other weights records
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(SmatError, match="exported from different weights"):
        Predictor.open(folder)
    (folder / "smat_decoder.json").unlink()
    with pytest.raises(SmatError, match="has no manifest"):
        Predictor.open(folder)


def test_opening_the_encoder_file_finds_its_decoder(exported, tmp_path):
    folder = _copy_pair(exported, tmp_path / "pair")
    predictor = Predictor.open(folder / "smat_encoder.onnx", device="cpu")
    assert predictor.info["details"]["decoder"] == str(folder / "smat_decoder.onnx")
    with pytest.raises(SmatError, match="is the pair's decoder"):
        Predictor.open(folder / "smat_decoder.onnx")
    (folder / "smat_decoder.onnx").unlink()
    with pytest.raises(SmatError, match=r"decoder smat_decoder\.onnx is not beside it"):
        Predictor.open(folder / "smat_encoder.onnx")
