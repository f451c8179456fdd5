"""The interactive pair's TensorRT build: the decoder's profiles derived from the encoder's image profile, and
``build_pair`` run against NVIDIA's real TensorRT Python API (stand-ins from the bindings' dump, as in
``test_tensorrt_api_surface.py``), plus the command line's refusals where TensorRT is absent."""

from __future__ import annotations

import itertools
import json

import numpy as np
import onnx
import pytest
import torch
from tiny_pair import make_tiny_pair

from smat_deploy.contract import DECODER_INPUTS, EMBEDDING_NAMES, PATCH_SIZE, padded_grid
from smat_deploy.engines import tensorrt_build
from smat_deploy.engines.pair_profiles import decoder_shapes, encoder_shapes, grid_bounds
from smat_deploy.engines.tensorrt_build import Profile, Shape, build_pair, check_pair_onnx, tensorrt_status
from smat_deploy.errors import SmatError
from smat_deploy.model.smat import padded_size

TRT_AVAILABLE, TRT_REASON = tensorrt_status()


# -- (a) the decoder's profile, derived from the encoder's -----------------------------------------
def _model_grid(height: int, width: int) -> tuple[int, int]:
    """The grid the model itself pads to (``smat_deploy.model.smat.padded_size``), independent of pair_profiles."""
    padded_h, padded_w = padded_size(height, width, PATCH_SIZE)
    assert padded_h % PATCH_SIZE == 0 and padded_w % PATCH_SIZE == 0
    return padded_h // PATCH_SIZE, padded_w // PATCH_SIZE


def test_padded_grid_is_the_models_padding():
    for height, width in itertools.product(range(14, 100), range(14, 60)):
        assert padded_grid(height, width) == _model_grid(height, width), (height, width)
    assert padded_grid(518, 518) == (37, 37) and padded_grid(518, 519) == (38, 38)  # the quirk: both sides grow


def _ranges():
    """Side ranges around patch boundaries: aligned/unaligned ends, single sizes, spans of one patch and more."""
    ends = [14, 15, 27, 28, 29, 41, 42, 56, 57, 69, 70]
    return [(low, high) for low in ends for high in ends if low <= high]


def test_grid_bounds_are_the_exact_grid_range_of_every_photo_in_range():
    """Brute force over every photo size in each range, with the model's own padding as the expectation."""
    ranges = _ranges()
    for (h_low, h_high), (w_low, w_high) in itertools.product(ranges, ranges[::3]):
        grids = [_model_grid(h, w) for h in range(h_low, h_high + 1) for w in range(w_low, w_high + 1)]
        heights, widths = [g[0] for g in grids], [g[1] for g in grids]
        case = (h_low, h_high, w_low, w_high)
        assert grid_bounds(h_low, h_high, w_low, w_high) == (min(heights), max(heights)), case
        assert grid_bounds(w_low, w_high, h_low, h_high) == (min(widths), max(widths)), case


def test_grid_bounds_on_the_default_range_and_naive_bounds_would_miss_photos():
    sides = np.arange(14, 1569)
    h, w = np.meshgrid(sides, sides, indexing="ij")
    needs_pad = (h % PATCH_SIZE + w % PATCH_SIZE) > 0  # the official rule, vectorised
    grid_h = (h + needs_pad * (PATCH_SIZE - h % PATCH_SIZE)) // PATCH_SIZE
    assert grid_bounds(14, 1568, 14, 1568) == (int(grid_h.min()), int(grid_h.max())) == (1, 113)
    # The grids of the profile's two corner photos alone (1 and 112) would leave out e.g. height 1568, width 1567.
    assert padded_grid(1568, 1568) == (112, 112) and padded_grid(1568, 1567) == (113, 112)
    # An aligned minimum with no aligned size on the other side never reaches its own grid.
    assert grid_bounds(28, 100, 15, 27) == (3, 8) and _model_grid(28, 15) == (3, 2)


def _embedding_shape(name: str, batch: int, height: int, width: int) -> tuple[int, ...]:
    """What the contract declares for one photo: its symbolic dims evaluated with the model's padded grid."""
    spec = next(s for s in DECODER_INPUTS if s["name"] == name)
    grid_h, grid_w = _model_grid(height, width)
    values = {"batch": batch, "height": height, "width": width, "grid_height": grid_h, "grid_width": grid_w}
    out = []
    for dim in spec["shape"]:
        if isinstance(dim, int):
            out.append(dim)
        else:
            factor, _, symbol = dim.rpartition("*")
            out.append(int(factor or 1) * values[symbol])
    return tuple(out)


PROFILES = [
    Profile(Shape(1, 14, 14), Shape(1, 518, 518), Shape(4, 1568, 1568)),
    Profile(Shape(1, 28, 42), Shape(2, 266, 300), Shape(3, 518, 600)),
    Profile(Shape(2, 100, 140), Shape(2, 100, 140), Shape(2, 100, 140)),  # one size, unaligned
    Profile(Shape(1, 112, 140), Shape(1, 112, 140), Shape(1, 112, 140)),  # one size, aligned
]


@pytest.mark.parametrize("profile", PROFILES, ids=str)
def test_every_photo_in_the_image_profile_fits_the_decoder_profile(profile):
    shapes = decoder_shapes(profile)
    assert list(shapes) == [spec["name"] for spec in DECODER_INPUTS]
    assert encoder_shapes(profile) == {
        "image": tuple((s.batch, 3, s.height, s.width) for s in (profile.min, profile.opt, profile.max))
    }
    rng = np.random.default_rng(0)
    low, high = profile.min, profile.max
    photos = [
        (b, h, w) for b in (low.batch, high.batch) for h in (low.height, high.height) for w in (low.width, high.width)
    ]
    photos += [
        (low.batch, h, w) for h, w in itertools.product(range(low.height, low.height + 15), (low.width, high.width))
    ]
    photos += [
        (high.batch, h, w)
        for h, w in itertools.product(range(high.height - 14, high.height + 1), (high.width - 1, high.width))
    ]
    photos += [(int(rng.integers(low.batch, high.batch + 1)), int(rng.integers(low.height, high.height + 1)),
                int(rng.integers(low.width, high.width + 1))) for _ in range(300)]  # fmt: skip
    seen = {name: [] for name in shapes}
    inside = lambda b, h, w: low.height <= h <= high.height and low.width <= w <= high.width  # noqa: E731
    for photo in filter(lambda photo: inside(*photo), photos):
        for name, (smallest, _, largest) in shapes.items():
            shape = _embedding_shape(name, *photo)
            assert all(a <= d <= b for a, d, b in zip(smallest, shape, largest, strict=True)), (name, photo, shape)
            seen[name].append(shape)
    for name, (smallest, _, largest) in shapes.items():  # tight: each axis's bounds are met by some photo
        assert tuple(map(min, zip(*seen[name], strict=True))) == smallest, name
        assert tuple(map(max, zip(*seen[name], strict=True))) == largest, name
    opt = profile.opt
    assert {name: dims[1] for name, dims in shapes.items()} == {
        name: _embedding_shape(name, opt.batch, opt.height, opt.width) for name in shapes
    }


def test_the_models_own_embedding_fits_the_derived_profile(varying_model):
    """The exported encoder's embedding of photos across a small range has the shapes the profile allows."""
    from smat_deploy.export.interactive import GraphEncoder

    encoder = GraphEncoder(varying_model).eval()
    profile = Profile(Shape(1, 14, 27), Shape(1, 28, 28), Shape(2, 29, 42))
    shapes = decoder_shapes(profile)
    for height, width in ((14, 27), (28, 28), (28, 29), (29, 42), (14, 42), (28, 42)):
        with torch.inference_mode():
            embedding = encoder(torch.rand(1, 3, height, width))
        for name, tensor in zip(EMBEDDING_NAMES, embedding, strict=True):
            low, _, high = shapes[name]
            assert all(a <= d <= b for a, d, b in zip(low, tensor.shape, high, strict=True)), (name, height, width)
            assert tuple(tensor.shape) == _embedding_shape(name, 1, height, width)
    assert shapes["features"][0][2:] == (1, 2) and shapes["features"][2][2:] == (3, 4)


# -- (b) build_pair against NVIDIA's TensorRT API ------------------------------------------------
def _build(trt, monkeypatch, encoder, output, **options):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(tensorrt_build, "_gpu", lambda: {"name": "stand-in", "compute_capability": "9.0"})
    engines = iter([b"encoder engine", b"decoder engine"])
    trt.answers("Builder.build_serialized_network", lambda *args: trt.new("IHostMemory", next(engines)))
    caches = iter([b"cache after the encoder", b"cache after the decoder"])
    trt.answers("ITimingCache.serialize", lambda *args: trt.new("IHostMemory", next(caches)))
    return build_pair(encoder, output, **options)


def test_build_pair_runs_against_the_real_api(trt, monkeypatch, tmp_path):
    encoder, decoder = make_tiny_pair(tmp_path / "export")
    profile = Profile(Shape(1, 14, 14), Shape(2, 266, 300), Shape(4, 518, 600))
    cache = tmp_path / "timing.cache"
    result = _build(trt, monkeypatch, encoder, tmp_path / "engines", profile=profile, timing_cache=cache)
    assert trt.violations == [] and trt.missing == []

    assert [c.args for c in trt.calls_to("OnnxParser.parse_from_file")] == [(str(encoder),), (str(decoder),)]
    builders = trt.calls_to("Builder")
    profiles = [c.result for c in trt.calls_to("Builder.create_optimization_profile")]
    assert len(builders) == 2 and len(profiles) == 2
    set_shapes = trt.calls_to("IOptimizationProfile.set_shape")
    by_profile = [[c.args for c in set_shapes if c.receiver is p] for p in profiles]
    assert by_profile[0] == [("image", (1, 3, 14, 14), (2, 3, 266, 300), (4, 3, 518, 600))]
    # Computed here from the contract and the model's padding: 14x14 -> grid 1x1; 266x300 -> 20x22; 518x600 ->
    # 38x43 (600 is not a multiple of 14, so 518 grows too).
    grid = {"min": (1, 1), "opt": (20, 22), "max": (38, 43)}
    assert (_model_grid(266, 300), _model_grid(518, 600)) == (grid["opt"], grid["max"])
    batches = {"min": 1, "opt": 2, "max": 4}
    sizes = {"min": (14, 14), "opt": (266, 300), "max": (518, 600)}

    def point(name, which):
        b, (gh, gw), (h, w) = batches[which], grid[which], sizes[which]
        return {
            "features": (b, 384, gh, gw),
            "class_token": (b, 384),
            "image16": (b, 3, 16 * gh, 16 * gw),
            "detail2": (b, 96, 4 * gh, 4 * gw),
            "fusion0": (b, 256, 2 * gh, 2 * gw),
            "prompt": (b, 1, h, w),
            "state": (b, 1),
        }[name]

    names = [spec["name"] for spec in DECODER_INPUTS]
    assert by_profile[1] == [(name, point(name, "min"), point(name, "opt"), point(name, "max")) for name in names]
    added = [c.args for c in trt.calls_to("IBuilderConfig.add_optimization_profile")]
    assert added == [(profiles[0],), (profiles[1],)]
    # One timing cache for both: the decoder's build reads what the encoder's wrote.
    assert [c.args for c in trt.calls_to("IBuilderConfig.create_timing_cache")] == [
        (b"",),
        (b"cache after the encoder",),
    ]
    assert cache.read_bytes() == b"cache after the decoder"

    assert result.encoder.engine == tmp_path / "engines" / "smat_encoder.plan"
    assert result.encoder.engine.read_bytes() == b"encoder engine"
    assert result.decoder.engine.read_bytes() == b"decoder engine"
    for role, partner, source in (("encoder", "smat_decoder.plan", encoder), ("decoder", "smat_encoder.plan", decoder)):
        sidecar = json.loads((tmp_path / "engines" / f"smat_{role}.json").read_text())
        assert sidecar["pair"] == {"role": role, "partner": partner, "weights_sha256": "w" * 64}
        assert sidecar["profile"] == {"min": "1x14x14", "opt": "2x266x300", "max": "4x518x600"}
        assert sidecar["tensorrt_version"] == trt.api.version and sidecar["source_onnx"] == str(source)
        declared = onnx.load(str(source))
        assert [i["name"] for i in sidecar["inputs"]] == [v.name for v in declared.graph.input]
        assert [o["name"] for o in sidecar["outputs"]] == [v.name for v in declared.graph.output]
    decoder_sidecar = json.loads((tmp_path / "engines" / "smat_decoder.json").read_text())
    assert decoder_sidecar["tensor_profiles"]["detail2"] == {
        which: list(point("detail2", which)) for which in ("min", "opt", "max")
    }
    assert decoder_sidecar["inputs"][0] == {
        "name": "features",
        "dtype": "float32",
        "shape": ["batch", 384, "grid_height", "grid_width"],
    }


def test_a_failed_decoder_build_writes_neither_engine(trt, monkeypatch, tmp_path):
    encoder, _ = make_tiny_pair(tmp_path / "export")
    results = iter([trt.new("IHostMemory", b"encoder engine"), None])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    trt.answers("Builder.build_serialized_network", lambda *args: next(results))
    with pytest.raises(SmatError, match=r"TensorRT failed to build an engine from smat_decoder\.onnx"):
        build_pair(encoder, tmp_path / "engines")
    assert not (tmp_path / "engines").exists() or list((tmp_path / "engines").iterdir()) == []
    assert trt.violations == [] and trt.missing == []


# -- (c) refusals, the same on every machine --------------------------------------------------------
def test_a_pair_that_does_not_belong_together_is_refused(tmp_path):
    encoder, _ = make_tiny_pair(tmp_path / "a", weights=("a" * 64, "b" * 64))
    with pytest.raises(SmatError, match="exported from different weights"):
        check_pair_onnx(encoder)
    encoder, decoder = make_tiny_pair(tmp_path / "b")
    with pytest.raises(
        SmatError,
        match=r"smat_decoder\.onnx is the pair's decoder, not its encoder: give the pair's encoder or its folder",
    ):
        check_pair_onnx(decoder)
    decoder.unlink()
    with pytest.raises(SmatError, match=r"decoder smat_decoder\.onnx is not beside it"):
        check_pair_onnx(encoder)
    encoder, _ = make_tiny_pair(tmp_path / "c", decoder_partner="other_encoder.onnx")
    with pytest.raises(SmatError, match=r"names other_encoder\.onnx as its encoder"):
        check_pair_onnx(encoder)
    encoder, decoder = make_tiny_pair(tmp_path / "d")
    swapped = onnx.load(str(decoder))
    swapped.graph.input[0].name = "feature"
    onnx.save(swapped, str(decoder))
    with pytest.raises(SmatError, match="is not an SMat model: unexpected input feature"):
        check_pair_onnx(encoder)
    sources = check_pair_onnx(make_tiny_pair(tmp_path / "e")[0])
    assert sources.weights_sha256 == "w" * 64 and sources.decoder.name == "smat_decoder.onnx"


def test_a_half_given_to_the_whole_model_build_points_to_the_pair(tmp_path):
    encoder, _ = make_tiny_pair(tmp_path / "export")
    with pytest.raises(SmatError, match="is the interactive pair's encoder: build both engines"):
        tensorrt_build.check_smat_onnx(encoder)


@pytest.mark.skipif(TRT_AVAILABLE, reason="TensorRT is installed here: building works")
def test_the_pair_build_without_tensorrt_says_why(run_cli, tmp_path):
    encoder, _ = make_tiny_pair(tmp_path / "export")
    for source in (["--interactive", "--onnx", tmp_path / "export"], ["--onnx", encoder]):
        result = run_cli("build", *source, "-o", tmp_path / "engines", "--max", "1024x768")
        result.expect_error(f"cannot build the pair's engines: {TRT_REASON}")
    assert not (tmp_path / "engines").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--onnx", "{export}"], "is a folder: add --interactive"),
        (["--onnx", "{export}/smat_decoder.onnx"], "is the pair's decoder"),
        (["--interactive", "--onnx", "{export}", "--precision", "fp16"], "has no smat_encoder_fp16.onnx"),
        (["--interactive", "--onnx", "{export}", "--precision", "fp64"], "unknown precision 'fp64'"),
        (["--interactive", "--onnx", "{whole}"], "is not part of one"),
        (["--onnx", "{export}/smat_encoder.onnx", "-o", "{export}/smat.plan"], "--output is a folder"),
        (["--onnx", "{export}/smat_encoder.onnx", "--max", "10"], "at least 14"),
    ],
)
def test_bad_pair_requests_are_one_line_errors(run_cli, tiny_onnx, tmp_path, args, message):
    make_tiny_pair(tmp_path / "export")
    filled = [a.format(export=tmp_path / "export", whole=tiny_onnx) for a in args]
    run_cli("build", *filled).expect_error(message)
    assert not list(tmp_path.glob("**/*.plan"))


# -- (d) a built pair read back for Triton with the real API ----------------------------------------
def test_triton_reads_a_built_pair_with_the_real_api(trt, monkeypatch, tmp_path):
    """``smat-deploy triton`` on the engines ``build_pair`` wrote, where TensorRT runs: I/O and profile bounds come
    from each engine through the TensorRT API (stand-ins answering like the built engines would)."""
    from smat_deploy.serve.model_repository import pair_io, pair_models

    encoder, _ = make_tiny_pair(tmp_path / "export")
    profile = Profile(Shape(1, 14, 14), Shape(1, 266, 300), Shape(3, 518, 600))
    built = _build(trt, monkeypatch, encoder, tmp_path / "engines", profile=profile)
    m = trt.module
    engines = {b"encoder engine": "encoder", b"decoder engine": "decoder"}
    io = {role: json.loads((tmp_path / "engines" / f"smat_{role}.json").read_text()) for role in engines.values()}
    deserialized = {}

    def deserialize(runtime, data):
        engine = trt.new("ICudaEngine")
        deserialized[engine] = engines[bytes(data)]
        return engine

    def tensors(engine):
        recorded = io[deserialized[engine]]
        return [(spec, m.TensorIOMode.INPUT) for spec in recorded["inputs"]] + [
            (spec, m.TensorIOMode.OUTPUT) for spec in recorded["outputs"]
        ]

    def find(engine, name):
        return next((spec, mode) for spec, mode in tensors(engine) if spec["name"] == name)

    def dims(spec):
        return trt.new("Dims", tuple(d if isinstance(d, int) else -1 for d in spec["shape"]))

    trt.answers("Runtime.deserialize_cuda_engine", deserialize)
    trt.answers("ICudaEngine.num_io_tensors", lambda engine: len(tensors(engine)))
    trt.answers("ICudaEngine.get_tensor_name", lambda engine, index: tensors(engine)[index][0]["name"])
    trt.answers("ICudaEngine.get_tensor_dtype", lambda engine, name: m.DataType.FLOAT)
    trt.answers("ICudaEngine.get_tensor_shape", lambda engine, name: dims(find(engine, name)[0]))
    trt.answers("ICudaEngine.get_tensor_mode", lambda engine, name: find(engine, name)[1])
    recorded_profiles = built.shapes

    def profile_shape(engine, name, index):
        return [trt.new("Dims", d) for d in recorded_profiles[deserialized[engine]][name]]

    trt.answers("ICudaEngine.get_tensor_profile_shape", profile_shape)
    pair = pair_io(tmp_path / "engines")
    assert pair.encoder.source == pair.decoder.source == "engine (tensorrt)"
    assert pair.encoder.limits.batch == pair.decoder.limits.batch == (1, 3)
    assert pair.decoder.limits.height == (14, 518) and pair.decoder.limits.width == (14, 600)
    assert [c.args for c in trt.calls_to("ICudaEngine.get_tensor_profile_shape")] == [("image", 0), ("prompt", 0)]
    models = pair_models(pair, "smat", max_batch=3)
    assert {t["name"]: t["dims"] for t in models["decoder"].inputs}["fusion0"] == [256, -1, -1]
    assert models["encoder"].platform == "tensorrt_plan" and models["encoder"].instance_kind == "KIND_GPU"
    with pytest.raises(SmatError, match=r"--max-batch 4 is more than smat_encoder\.plan accepts"):
        pair_models(pair, "smat", max_batch=4)
    assert trt.violations == [] and trt.missing == []


@pytest.mark.heavy
def test_the_exported_pair_passes_every_check_before_tensorrt(run_cli, exported, tmp_path):
    """The session's real export: the pair is recognised, belongs together and meets each half's contract."""
    encoder = exported["dir"] / "smat_encoder.onnx"
    sources = check_pair_onnx(encoder)
    manifests = [json.loads(p.with_suffix(".json").read_text()) for p in (sources.encoder, sources.decoder)]
    assert sources.weights_sha256 == manifests[0]["pair"]["weights_sha256"] == manifests[1]["pair"]["weights_sha256"]
    declared = [(i["name"], i["dtype"], i["shape"]) for i in manifests[1]["inputs"]]
    assert [
        (i["name"], i["dtype"], i["shape"]) for i in tensorrt_build.onnx_io(sources.models["decoder"])["inputs"]
    ] == declared
    if not TRT_AVAILABLE:
        result = run_cli("build", "--interactive", "--onnx", exported["dir"], "-o", tmp_path / "engines")
        result.expect_error(f"cannot build the pair's engines: {TRT_REASON}")
