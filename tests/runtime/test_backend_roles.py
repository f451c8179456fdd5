"""The backend contract over roles: every backend in the registry opens each graph of the contract it supports
(``whole``, the pair's ``encoder`` and ``decoder``) and runs it by the same conventions, and so serves both
:class:`~smat_deploy.Runtime` and :class:`~smat_deploy.Predictor`.

The pair is the tiny one of ``tests/tiny_pair.py`` with ``carry=True``: its embedding carries the photo (tensor
``k`` holds ``k * mean(image)``) and its decoder answers ``prompt * state * mean(image)`` only when every
embedding tensor reached it under its own name, so a backend that drops, swaps or zeroes one is caught. TensorRT
opens engines built from it (skipped where TensorRT cannot run, with its own reason); the torch backend opens
the reference's own split, :meth:`SMat.embed` / :meth:`SMat.decode`, checked against its whole forward.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_backend_contract import FROM_ONNX, ONNX_BACKENDS, contract_image, default_device, one_line_error, require
from tiny_pair import make_tiny_pair

from smat_deploy import Predictor, Runtime, SmatError
from smat_deploy.contract import EMBEDDING, EMBEDDING_NAMES, ROLES, padded_grid
from smat_deploy.runtime.registry import BACKENDS, backend_class

#: Backends that open the pair's files (ONNX, or engines built from it) and the torch reference's split.
PAIR_BACKENDS = [*FROM_ONNX, "torch"]
RNG = np.random.default_rng(21)
#: Sides that are not multiples of 14 (the padded grid's quirk applies).
PHOTO = (RNG.random((45, 59, 3)) * 255).astype(np.uint8)
ATOL = 1e-5


def pair_files(name: str, folder: Path) -> tuple[object, object]:
    """The encoder and decoder backend ``name`` opens for the tiny pair in ``folder`` (made once)."""
    encoder, decoder = folder / "smat_encoder.onnx", folder / "smat_decoder.onnx"
    if not encoder.is_file():
        make_tiny_pair(folder, carry=True)
    if name in ONNX_BACKENDS:
        return encoder, decoder
    if name == "tensorrt":
        from smat_deploy.engines.tensorrt_build import Profile, Shape, build_pair

        built = build_pair(
            encoder, folder / "tensorrt", profile=Profile(Shape(1, 14, 14), Shape(1, 45, 59), Shape(2, 128, 128))
        )
        return built.encoder.engine, built.decoder.engine
    if name == "torch":
        return "torch", "torch"
    raise NotImplementedError(f"the role suite cannot make the pair for backend {name}: add it to pair_files")


@pytest.fixture(scope="module")
def pair_folder(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("pair")


def expected_alpha(image: np.ndarray, prompt: np.ndarray, state: np.ndarray) -> np.ndarray:
    """The tiny pair's answer, from numpy: ``prompt * state * mean(image)``."""
    return prompt * state.reshape(-1, 1, 1, 1) * image.astype(np.float64).mean()


def test_every_backend_declares_whether_it_runs_the_pair():
    """A backend in the registry either opens the pair's roles here or is named by this suite as not doing so."""
    assert set(BACKENDS) <= set(PAIR_BACKENDS), "a new backend: add it to pair_files and PAIR_BACKENDS"


@pytest.mark.parametrize("name", FROM_ONNX)
def test_each_role_opens_and_runs_by_the_contract(name, pair_folder):
    cls = require(name)
    encoder_file, decoder_file = pair_files(name, pair_folder)
    device = default_device(cls)
    encoder = cls.open(encoder_file, device=device, role="encoder")
    decoder = cls.open(decoder_file, device=device, role="decoder")
    for backend, role in ((encoder, "encoder"), (decoder, "decoder")):
        assert backend.role == role and backend.name == name
        inputs, outputs = ROLES[role].specs
        assert [spec.name for spec in backend.inputs] == [spec.name for spec in inputs]
        assert [spec.name for spec in backend.outputs] == [spec.name for spec in outputs]
        assert all(spec.dtype == "float32" for spec in (*backend.inputs, *backend.outputs))
    image = contract_image(PHOTO)
    embedding = encoder.infer({"image": image})
    assert tuple(embedding) == EMBEDDING_NAMES
    grid = padded_grid(45, 59)
    mean = image.astype(np.float64).mean()
    for k, spec in enumerate(EMBEDDING, start=1):
        tensor = np.asarray(embedding[spec["name"]])  # a host array here (the CPU, or TensorRT's output copied)
        if spec["name"] == "features":
            assert tensor.shape == (1, spec["shape"][1], *grid)
        assert tensor.dtype == np.float32
        np.testing.assert_allclose(tensor, k * mean, rtol=1e-5)
    prompt = (RNG.random((1, 1, 45, 59)) > 0.5).astype(np.float32)
    for value in (0.0, 1.0):
        state = np.full((1, 1), value, np.float32)
        alpha = np.asarray(decoder.infer({**embedding, "prompt": prompt, "state": state})["alpha"])
        assert alpha.shape == (1, 1, 45, 59) and alpha.dtype == np.float32
        np.testing.assert_allclose(alpha, expected_alpha(image, prompt, state), atol=ATOL)


@pytest.mark.parametrize("name", FROM_ONNX)
def test_a_file_opened_as_another_role_is_refused_in_one_line(name, pair_folder, tiny_onnx):
    cls = require(name)
    encoder_file, decoder_file = pair_files(name, pair_folder)
    device = default_device(cls)
    with pytest.raises(SmatError) as caught:
        cls.open(encoder_file, device=device, role="decoder")
    assert "decoder" in one_line_error(caught)
    with pytest.raises(SmatError) as caught:
        cls.open(decoder_file, device=device, role="whole")
    one_line_error(caught)
    if name in ONNX_BACKENDS:
        with pytest.raises(SmatError) as caught:
            cls.open(tiny_onnx, device=device, role="encoder")
        assert "encoder" in one_line_error(caught)
    with pytest.raises(SmatError, match="is the interactive pair's encoder") as caught:
        Runtime.open(encoder_file, backend=name, device=device)
    one_line_error(caught)


@pytest.mark.parametrize("name", PAIR_BACKENDS)
def test_the_predictor_runs_on_every_backend_from_one_embedding(name, pair_folder):
    cls = require(name)
    encoder_file, _ = pair_files(name, pair_folder)
    device = default_device(cls)
    source = encoder_file if name != "torch" else "torch"
    predictor = Predictor.open(source, backend=name, device=device)
    assert predictor.backend == name and predictor.encoder.role == "encoder" and predictor.decoder.role == "decoder"
    embedding = predictor.embed(PHOTO)
    assert (embedding.height, embedding.width) == (45, 59)
    image = contract_image(PHOTO)
    prompts = [(RNG.random((45, 59)) > 0.5).astype(np.float32) for _ in range(3)]
    if name == "torch":  # the reference's split equals its own whole forward
        whole = Runtime.open("torch", device=device)
        for prompt in prompts:
            np.testing.assert_allclose(predictor.predict(embedding, prompt), whole(PHOTO, prompt), atol=ATOL)
    else:
        for prompt in prompts:
            expected = expected_alpha(image, prompt[None, None], np.ones((1, 1), np.float32))[0, 0]
            np.testing.assert_allclose(predictor.predict(embedding, prompt), expected, atol=ATOL)


@pytest.mark.parametrize("name", ONNX_BACKENDS)
def test_an_embedding_from_another_backend_is_refused(name, pair_folder):
    require(name)
    others = [other for other in ONNX_BACKENDS if other != name and backend_class(other).unavailable_reason() is None]
    if not others:
        pytest.skip(f"no second backend opening .onnx files here besides {name}")
    encoder_file, _ = pair_files(name, pair_folder)
    mine = Predictor.open(encoder_file, backend=name, device="cpu")
    theirs = Predictor.open(encoder_file, backend=others[0], device="cpu")
    with pytest.raises(SmatError, match="made by another model or engine"):
        mine.predict(theirs.embed(PHOTO), None)


@pytest.mark.parametrize("name", PAIR_BACKENDS)
def test_the_pair_takes_options_and_devices_by_the_whole_models_conventions(name, pair_folder, tmp_path):
    """An unknown option and a device the backend cannot use get the same one-line error from Predictor.open as
    from Runtime.open, before anything is loaded."""
    cls = backend_class(name)
    encoder_file, _ = pair_files(name, pair_folder) if name in ONNX_BACKENDS or name == "torch" else (None, None)
    whole_file: object = "torch" if name == "torch" else pair_folder / "tiny.onnx"
    if encoder_file is None:  # TensorRT: placeholder plans are enough to be refused before loading
        encoder_file, whole_file = tmp_path / "smat_encoder.plan", tmp_path / "smat.plan"
        encoder_file.write_bytes(b"")
        whole_file.write_bytes(b"")
    messages = {}
    for opener in ("runtime", "predictor"):
        with pytest.raises(SmatError) as caught:
            if opener == "runtime":
                Runtime.open(whole_file, backend=name, device="cpu", nonsense=1)
            else:
                Predictor.open(encoder_file, backend=name, device="cpu", nonsense=1)
        messages[opener] = one_line_error(caught)
    assert messages["runtime"] == messages["predictor"] and "nonsense" in messages["runtime"]
    missing = [device for device in ("cpu", "cuda") if device not in cls.devices]
    for device in missing:
        with pytest.raises(SmatError) as caught:
            Predictor.open(encoder_file, backend=name, device=device)
        assert f"backend {name} runs on" in one_line_error(caught)


def test_openvino_refuses_a_device_it_would_not_compile_for_in_one_line(pair_folder):
    """OpenVINO compiles for the CPU here; asked for CUDA it says so in one line, for the whole model and the pair."""
    require("openvino")
    encoder_file, _ = pair_files("openvino", pair_folder)
    with pytest.raises(SmatError) as caught:
        Predictor.open(encoder_file, backend="openvino", device="cuda")
    assert one_line_error(caught) == "backend openvino runs on cpu, not cuda"
    from smat_deploy.runtime.openvino import OpenVinoBackend

    with pytest.raises(SmatError) as caught:  # the backend itself, below the registry's check
        OpenVinoBackend.open(encoder_file, device="cuda:0", role="encoder")
    assert "OpenVINO runs here on the CPU, not cuda:0" in one_line_error(caught)
