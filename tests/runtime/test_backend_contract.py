"""One contract suite, run over every backend in :data:`smat_deploy.runtime.registry.BACKENDS`.

A new registry line is tested here without another test file: each case is parametrised over the
registry, and :func:`make_engine` makes the engine a backend opens (``"torch"`` for the PyTorch
reference, the tiny contract ONNX of ``tests/conftest.py`` for the backends that open ``.onnx``, a
TensorRT engine built from that ONNX). A backend that cannot run here is skipped with its own
:meth:`~smat_deploy.runtime.Backend.unavailable_reason`; the cases about what ``Runtime.open``
refuses before loading anything (unknown options, devices a backend does not run on) run for every
backend, with a placeholder file where the backend's package is missing.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto
from tensorrt_plans import build_tensorrt_plan

from smat_deploy import SmatError
from smat_deploy import prompts as P
from smat_deploy.contract import MIN_SIDE
from smat_deploy.runtime import Backend, BackendOption, Runtime, describe_backends
from smat_deploy.runtime.devices import cuda_device_count
from smat_deploy.runtime.registry import BACKENDS, backend_class

#: Backends that open ``.onnx`` files: the contract checks of a model file apply to each.
ONNX_BACKENDS = [name for name in BACKENDS if ".onnx" in backend_class(name).suffixes]
#: Backends whose engine the suite builds from an ONNX file (so a fixed-size ONNX gives a fixed-size engine).
BUILT_FROM_ONNX = ("tensorrt",)
FROM_ONNX = [name for name in BACKENDS if name in ONNX_BACKENDS or name in BUILT_FROM_ONNX]

RNG = np.random.default_rng(17)
PHOTO = (RNG.random((30, 41, 3)) * 255).astype(np.uint8)
#: The tiny model is exact to float32 rounding; the torch engine is compared with its own model.
ATOL = 1e-6


def contract_image(photo: np.ndarray) -> np.ndarray:
    """An ``HxWx3`` uint8 photo as the contract's ``image [1,3,H,W]``, converted as the runtime does."""
    return np.ascontiguousarray((photo.astype(np.float32) / np.float32(255)).transpose(2, 0, 1)[None])


def one_line_error(caught: pytest.ExceptionInfo[SmatError]) -> str:
    message = str(caught.value)
    assert message and "\n" not in message, message
    return message


# -- engines ---------------------------------------------------------------------------------------
def tensorrt_profile(onnx_path: Path) -> tuple:
    """One profile over an ONNX file's dynamic sizes (batch 1..4, sides 14..128); fixed sizes stay fixed."""
    graph = onnx.load(str(onnx_path)).graph
    image = next(value for value in graph.input if value.name == "image")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in image.type.tensor_type.shape.dim]
    batch, _, height, width = dims
    (b0, b1), (h0, h1), (w0, w1) = (
        (dim, dim) if dim else free
        for dim, free in ((batch, (1, 4)), (height, (MIN_SIDE, 128)), (width, (MIN_SIDE, 128)))
    )
    return ((b0, h0, w0), (b0, h1, w1), (b1, h1, w1))


def make_engine(name: str, folder: Path, make_onnx: Callable[..., Path], **variant: object) -> object:
    """What backend ``name`` opens: ``variant`` is passed to :func:`make_tiny_onnx` (a fixed size, say)."""
    if name == "torch":
        assert not variant, "the torch engine has no ONNX variants"
        return "torch"
    stem = "tiny" + "".join(f"_{key}{value}" for key, value in sorted(variant.items())).replace(" ", "")
    onnx_path = folder / f"{stem}.onnx"
    if not onnx_path.is_file():
        make_onnx(onnx_path, precision="float32", **variant)
    if name in ONNX_BACKENDS:
        return onnx_path
    if name == "tensorrt":
        plan = folder / f"{stem}.plan"
        return plan if plan.is_file() else build_tensorrt_plan(onnx_path, plan, tensorrt_profile(onnx_path))
    raise NotImplementedError(f"the contract suite cannot make an engine for backend {name}: add it to make_engine")


@pytest.fixture(scope="module")
def engines(tmp_path_factory, tiny_onnx_factory) -> Callable[..., object]:
    """``engines(name, **variant)``: the engine backend ``name`` opens, made once per module."""
    folder = tmp_path_factory.mktemp("engines")
    return lambda name, **variant: make_engine(name, folder, tiny_onnx_factory, **variant)


def require(name: str) -> type[Backend]:
    """The backend class, or a skip with its own reason when it cannot run here."""
    cls = backend_class(name)
    if (reason := cls.unavailable_reason()) is not None:
        pytest.skip(reason)
    return cls


def default_device(cls: type[Backend]) -> str:
    return "cpu" if "cpu" in cls.devices else "auto"


@dataclass
class Subject:
    """One backend under test: its engine and what its alpha must be for contract inputs."""

    name: str
    cls: type[Backend]
    engine: object
    reference: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # contract inputs -> alpha [B,1,H,W]

    def open(self, **options: object) -> Runtime:
        return Runtime.open(self.engine, backend=self.name, device=default_device(self.cls), **options)


@pytest.fixture(params=list(BACKENDS))
def subject(request, engines, tiny_expected_alpha) -> Subject:
    name = request.param
    cls = require(name)
    if name == "torch":
        request.getfixturevalue("fast_reference")  # "torch" opens the built-in weights: computed once per session
        model = request.getfixturevalue("varying_model")

        def reference(image: np.ndarray, prompt: np.ndarray, state: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                tensors = (torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for a in (image, prompt, state))
                return model(*tensors).numpy()

        return Subject(name, cls, engines(name), reference)
    return Subject(name, cls, engines(name), tiny_expected_alpha)


def engine_or_placeholder(name: str, engines: Callable[..., object], folder: Path) -> object:
    """The real engine where the backend can run; else a file it would open (refusals before loading still apply)."""
    cls = backend_class(name)
    if cls.unavailable_reason() is None:
        return engines(name)
    placeholder = folder / f"smat{cls.suffixes[0]}"
    placeholder.write_bytes(b"not an engine")
    return placeholder


def spy_on_run(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Record the image shape of every call that reaches the backend."""
    calls: list[tuple[int, ...]] = []
    run = runtime.backend.run

    def recording(image, prompt, state):
        calls.append(tuple(image.shape))
        return run(image, prompt, state)

    monkeypatch.setattr(runtime.backend, "run", recording)
    return calls


# -- what a backend declares -----------------------------------------------------------------------
@pytest.mark.parametrize("name", list(BACKENDS))
def test_the_backend_declares_name_devices_options_and_install_hint(name):
    cls = backend_class(name)
    assert issubclass(cls, Backend) and cls.name == name and name.strip() == name and name
    assert cls.summary and cls.install and "pip install" in cls.install
    assert cls.devices and set(cls.devices) <= {"cpu", "cuda"}
    assert cls.suffixes or cls.accepts("torch"), "a backend opens some file type or a named engine"
    assert all(s.startswith(".") and s == s.lower() for s in cls.suffixes)
    assert all(isinstance(option, BackendOption) and option.help for option in cls.options.values())
    assert all(option.kind in (int, str, list) for option in cls.options.values())
    assert "device" not in cls.options, "device is Runtime.open's own argument"
    assert cls.triton_platform is None or (len(cls.triton_platform) == 2 and all(cls.triton_platform))
    reason = cls.unavailable_reason()
    assert reason is None or (isinstance(reason, str) and reason and "\n" not in reason)


def test_an_unknown_backend_name_is_one_line_listing_the_known_ones(tiny_onnx):
    with pytest.raises(SmatError) as caught:
        Runtime.open(tiny_onnx, backend="tflite")
    message = one_line_error(caught)
    assert "'tflite'" in message and all(name in message for name in BACKENDS)


# -- refusals before anything loads ----------------------------------------------------------------
@pytest.mark.parametrize("name", list(BACKENDS))
def test_an_unknown_or_malformed_option_names_the_option_and_the_backend(name, engines, tmp_path):
    cls = backend_class(name)
    engine = engine_or_placeholder(name, engines, tmp_path)
    with pytest.raises(SmatError) as caught:
        Runtime.open(engine, backend=name, device=default_device(cls), colour="blue")
    message = one_line_error(caught)
    assert f"backend {name} does not take option 'colour'" in message
    assert all(option in message for option in cls.options) or (not cls.options and "no options" in message)
    malformed = {int: "many", str: 5, list: 5}
    for option, declaration in cls.options.items():
        with pytest.raises(SmatError) as caught:
            Runtime.open(engine, backend=name, device=default_device(cls), **{option: malformed[declaration.kind]})
        assert f"option {option} of {name}" in one_line_error(caught)


@pytest.mark.parametrize("name", list(BACKENDS))
def test_a_device_the_backend_cannot_use_is_a_one_line_error(name, engines, tmp_path):
    cls = backend_class(name)
    engine = engine_or_placeholder(name, engines, tmp_path)
    refused = [kind for kind in ("cpu", "cuda") if kind not in cls.devices]
    if "cuda" in cls.devices and cls.unavailable_reason() is None:
        gpus = cuda_device_count()
        refused.append("cuda" if gpus == 0 else f"cuda:{gpus}")  # no GPU, or one past the last
    assert refused, "every backend has a device request it must refuse"
    for device in refused:
        with pytest.raises(SmatError) as caught:
            Runtime.open(engine, backend=name, device=device)
        assert device in one_line_error(caught)


# -- size limits -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", FROM_ONNX)
def test_a_fixed_size_engine_refuses_other_sizes_before_running(name, engines, monkeypatch):
    cls = require(name)
    engine = engines(name, size=(28, 28), batch=1)
    runtime = Runtime.open(engine, backend=name, device=default_device(cls))
    assert runtime.info.limits == {"batch": [1, 1], "height": [28, 28], "width": [28, 28]}
    calls = spy_on_run(runtime, monkeypatch)
    assert runtime(np.zeros((28, 28, 3), np.uint8)).shape == (28, 28)
    for image, pattern in [
        (np.zeros((42, 28, 3), np.uint8), r"height 42 is outside what .*accepts: exactly 28"),
        (np.zeros((28, 42, 3), np.uint8), r"width 42 is outside what .*accepts: exactly 28"),
        (np.zeros((2, 3, 28, 28), np.float32), r"batch 2 is outside what .*accepts: exactly 1"),
    ]:
        with pytest.raises(SmatError, match=pattern) as caught:
            runtime(image)
        one_line_error(caught)
    assert calls == [(1, 3, 28, 28)], "a refused size must never reach the engine"


def test_the_14x14_minimum_holds_for_every_backend(subject, monkeypatch):
    runtime = subject.open()
    calls = spy_on_run(runtime, monkeypatch)
    smallest = runtime(np.full((MIN_SIDE, MIN_SIDE, 3), 128, np.uint8))
    assert smallest.shape == (MIN_SIDE, MIN_SIDE)
    for image in (
        np.zeros((MIN_SIDE - 1, 20, 3), np.uint8),
        np.zeros((20, MIN_SIDE - 1, 3), np.uint8),
        np.zeros((2, 3, MIN_SIDE - 1, MIN_SIDE - 1), np.float32),
    ):
        with pytest.raises(SmatError) as caught:
            runtime(image)
        assert "at least 14x14" in one_line_error(caught)
    assert calls == [(1, 3, MIN_SIDE, MIN_SIDE)]


# -- contract checks of a model file ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("variant", "message"),
    [
        ({"names": ("img", "prompt", "state", "alpha")}, "missing input image; unexpected input img"),
        ({"names": ("image", "prompt", "state", "matte")}, "missing output alpha; unexpected output matte"),
        ({"image_type": TensorProto.DOUBLE}, "image is float64, expected float32"),
        ({"image_type": TensorProto.UINT8}, "image is uint8, expected float32"),
        ({"state_rank": 1}, "state has rank 1, expected 2"),
        ({"extra_output": True}, "unexpected output grey_out"),
    ],
)
@pytest.mark.parametrize("name", ONNX_BACKENDS)
def test_an_onnx_that_breaks_the_contract_is_refused_naming_the_difference(
    name, variant, message, tmp_path, tiny_onnx_factory
):
    require(name)
    path = tiny_onnx_factory(tmp_path / "broken.onnx", **variant)
    with pytest.raises(SmatError) as caught:
        Runtime.open(path, backend=name)
    text = one_line_error(caught)
    assert "does not match the SMat contract" in text and message in text and str(path) in text


@pytest.mark.parametrize("name", ONNX_BACKENDS)
def test_a_contract_input_aliased_inside_the_graph_still_opens(name, tmp_path, tiny_onnx, tiny_expected_alpha):
    """The image's no-op Cast output is named ``a_image``: an engine may fuse the two, the file's I/O still counts."""
    require(name)
    model = onnx.load(str(tiny_onnx))
    for node in model.graph.node:
        node.input[:] = ["a_image" if n == "image_f" else n for n in node.input]
        node.output[:] = ["a_image" if n == "image_f" else n for n in node.output]
    onnx.save(model, str(tmp_path / "aliased.onnx"))
    runtime = Runtime.open(tmp_path / "aliased.onnx", backend=name)
    assert [spec["name"] for spec in runtime.info.inputs] == ["image", "prompt", "state"]
    expected = tiny_expected_alpha(contract_image(PHOTO), np.zeros((1, 1, 30, 41)), np.zeros((1, 1)))[0, 0]
    np.testing.assert_allclose(runtime(PHOTO), expected, atol=ATOL)


# -- inputs and outputs ----------------------------------------------------------------------------
def test_numpy_batches_torch_tensors_and_masks_in_the_callers_kind(subject):
    runtime = subject.open()
    alpha = runtime(PHOTO)
    assert isinstance(alpha, np.ndarray) and alpha.shape == (30, 41) and alpha.dtype == np.float32
    assert alpha.min() >= 0.0 and alpha.max() <= 1.0
    empty = np.zeros((1, 1, 30, 41), np.float32)
    np.testing.assert_allclose(
        alpha, subject.reference(contract_image(PHOTO), empty, np.zeros((1, 1)))[0, 0], atol=ATOL
    )

    batch = RNG.random((3, 3, 20, 17)).astype(np.float32)
    prompt = (RNG.random((3, 1, 20, 17)) > 0.7).astype(np.float32)
    state = np.array([[1], [0], [1]], np.float32)
    alpha_b = runtime(batch, prompt, state)
    assert isinstance(alpha_b, np.ndarray) and alpha_b.shape == (3, 1, 20, 17) and alpha_b.dtype == np.float32
    np.testing.assert_allclose(alpha_b, subject.reference(batch, prompt, state), atol=ATOL)

    alpha_t = runtime(torch.from_numpy(batch), torch.from_numpy(prompt), torch.from_numpy(state))
    assert isinstance(alpha_t, torch.Tensor) and alpha_t.device.type == "cpu" and alpha_t.dtype == torch.float32
    assert alpha_t.shape == (3, 1, 20, 17)
    np.testing.assert_allclose(alpha_t.numpy(), alpha_b, atol=ATOL)
    single_t = runtime(torch.from_numpy(PHOTO))
    assert isinstance(single_t, torch.Tensor) and single_t.shape == (30, 41)
    np.testing.assert_allclose(single_t.numpy(), alpha, atol=ATOL)

    mask = P.rasterize([P.Point(20, 10, radius=3)], (30, 41))
    expected = subject.reference(contract_image(PHOTO), mask[None, None], np.ones((1, 1)))[0, 0]
    assert np.abs(expected - alpha).max() > 100 * ATOL, "the mask changes the alpha: the comparison means something"
    for given in (mask, mask > 0, (mask * 255).astype(np.uint8), torch.from_numpy(mask > 0), [P.Point(20, 10, 3)]):
        out = runtime(PHOTO, given)
        np.testing.assert_allclose(np.asarray(out), expected, atol=ATOL, err_msg=f"prompt given as {type(given)}")


def test_raw_call_gives_the_runtimes_alpha_on_a_numpy_feed(subject):
    runtime = subject.open()
    raw = runtime.backend.raw_call()
    if raw is None:
        assert type(runtime.backend).raw_call is Backend.raw_call  # no own call: bench reports no overhead
        return
    image = RNG.random((2, 3, 28, 42)).astype(np.float32)
    prompt = np.zeros((2, 1, 28, 42), np.float32)
    prompt[1, :, 5:15, 10:30] = 1
    state = np.array([[0], [1]], np.float32)
    out = raw({"image": image, "prompt": prompt, "state": state})
    bare = np.asarray(out[0] if isinstance(out, list | tuple) else out)  # ONNX Runtime returns its output list
    assert bare.shape == (2, 1, 28, 42)
    np.testing.assert_array_equal(bare, runtime(image, prompt, state))


# -- threads ---------------------------------------------------------------------------------------
def test_concurrent_calls_on_different_inputs_equal_sequential_calls(subject):
    runtime = subject.open()
    rng = np.random.default_rng(3)
    jobs: list[tuple[object, object]] = []
    for i in range(8):
        height, width = 28 + 7 * (i % 3), 42 + i
        if i % 2:
            image: object = (rng.random((2, 3, height, width)) * 0.9).astype(np.float32)
            jobs.append((image, [[P.Point(10, 10, 4)], []]))
        else:
            image = (rng.random((height, width, 3)) * 255).astype(np.uint8)
            jobs.append((image, [P.Box(3, 3, 20, 20)] if i % 4 else None))
    sequential = [runtime(image, prompt) for image, prompt in jobs]
    for _ in range(2):
        together = all_at_once(runtime, jobs)
        for index, (one, other) in enumerate(zip(sequential, together, strict=True)):
            np.testing.assert_array_equal(one, other, err_msg=f"job {index}")


def all_at_once(runtime: Runtime, jobs: list[tuple[object, object]]) -> list[object]:
    """Each job on its own thread, all released together by a barrier; any exception is re-raised here."""
    start = threading.Barrier(len(jobs))
    results: list[object] = [None] * len(jobs)
    errors: list[BaseException] = []

    def call(index: int) -> None:
        try:
            start.wait(timeout=60)
            results[index] = runtime(*jobs[index])
        except BaseException as err:
            errors.append(err)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads), "a call hung"
    return results


# -- a backend chosen with backend= --------------------------------------------------------------
def test_forcing_openvino_on_an_onnx_matches_onnx_runtime(tiny_onnx):
    require("openvino")
    default = Runtime.open(tiny_onnx, device="cpu")
    forced = Runtime.open(tiny_onnx, backend="openvino")
    assert default.info.backend == "onnxruntime" and forced.info.backend == "openvino"
    assert forced.info.device == "cpu" and forced.info.details["inference_precision"] == "f32"
    batch = np.random.default_rng(5).random((2, 3, 45, 59)).astype(np.float32)
    prompts = [[P.Point(30, 20, radius=6)], []]
    expected = default(batch, prompts)
    alpha = forced(batch, prompts)
    assert alpha.shape == expected.shape == (2, 1, 45, 59)
    assert float(np.abs(alpha - expected).max()) <= 1e-5  # measured: 6e-8 here, 3e-7 on the real export


# -- a backend whose package is missing ------------------------------------------------------------
def pretend_uninstalled(monkeypatch: pytest.MonkeyPatch, *packages: str) -> None:
    real = importlib.util.find_spec

    def find_spec(name: str, package: str | None = None):
        return None if name.partition(".")[0] in packages else real(name, package)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_openvino_missing_is_one_line_saying_how_to_install_it_and_onnx_still_runs(monkeypatch, tiny_onnx):
    pretend_uninstalled(monkeypatch, "openvino")
    openvino = backend_class("openvino")
    reason = openvino.unavailable_reason()
    assert reason is not None and openvino.install in reason and "pip install" in reason
    with pytest.raises(SmatError) as caught:
        Runtime.open(tiny_onnx, backend="openvino")
    assert one_line_error(caught) == reason
    row = next(row for row in describe_backends() if row["backend"] == "openvino")
    assert row["available"] is False and row["reason"] == reason
    runtime = Runtime.open(tiny_onnx)  # no backend=: .onnx goes to ONNX Runtime
    assert runtime.info.backend == "onnxruntime" and runtime(PHOTO).shape == (30, 41)


def test_torch_missing_is_one_line_saying_how_to_install_it(monkeypatch):
    pretend_uninstalled(monkeypatch, "torch", "timm")
    with pytest.raises(SmatError) as caught:
        Runtime.open("torch")
    message = one_line_error(caught)
    assert "torch" in message and "not installed" in message and backend_class("torch").install in message
