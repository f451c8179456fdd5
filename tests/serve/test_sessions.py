"""Interactive sessions in ``smat-deploy serve``: the session cache, the session models' request handling, where
the interactive pair comes from, and how a server or a load test without sessions says so."""

from __future__ import annotations

import contextlib
import json
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from serve_helpers import free_ports
from tiny_pair import make_tiny_pair

from smat_deploy.contract import MAX_SIDE, pair_file
from smat_deploy.errors import SmatError
from smat_deploy.serve.lifecycle import ServeSummary, check_same_weights, plan_sessions, whole_model
from smat_deploy.serve.server import BadRequest, ServeConfig, SessionModels
from smat_deploy.serve.sessions import SessionCache, UnknownSession


@dataclass(eq=False)
class Blob:
    """Stands in for a PhotoEmbedding: the cache only reads ``nbytes``."""

    nbytes: int
    name: str = ""


# -- the cache -------------------------------------------------------------------------------------
def test_put_get_returns_the_same_embedding_under_a_fresh_unguessable_id():
    cache = SessionCache(max_count=8, max_bytes=1000)
    blobs = [Blob(10, str(i)) for i in range(5)]
    ids = [cache.put(blob) for blob in blobs]
    assert len(set(ids)) == 5
    for session_id, blob in zip(ids, blobs, strict=True):
        assert re.fullmatch(r"[0-9a-f]{32}", session_id)
        assert cache.get(session_id) is blob
        assert cache.get(session_id.encode()) is blob  # as a KServe BYTES tensor carries it
    stats = cache.stats
    assert (stats.count, stats.bytes, stats.created, stats.hits, stats.misses) == (5, 50, 5, 10, 0)


def test_the_count_bound_evicts_the_least_recently_used():
    cache = SessionCache(max_count=2, max_bytes=10**9)
    a, b = cache.put(Blob(1, "a")), cache.put(Blob(1, "b"))
    cache.get(a)  # a is now the most recently used: b goes first
    c = cache.put(Blob(1, "c"))
    assert a in cache and c in cache and b not in cache
    with pytest.raises(UnknownSession, match=f"unknown or expired session '{b}'"):
        cache.get(b)
    d = cache.put(Blob(1, "d"))  # now a is the oldest use
    assert a not in cache and {c, d} == {k for k in (a, b, c, d) if k in cache}
    stats = cache.stats
    assert (stats.count, stats.evictions, stats.misses, len(cache)) == (2, 2, 1, 2)


def test_the_byte_bound_evicts_until_the_new_embedding_fits():
    cache = SessionCache(max_count=100, max_bytes=100)
    first, second, third = (cache.put(Blob(40)) for _ in range(3))
    assert first not in cache and second in cache and third in cache
    assert cache.stats.bytes == 80
    whole = cache.put(Blob(100))  # exactly the budget: everything else goes
    assert [s in cache for s in (second, third, whole)] == [False, False, True]
    assert (cache.stats.bytes, cache.stats.evictions) == (100, 3)


def test_an_embedding_larger_than_the_budget_is_refused_and_evicts_nothing():
    cache = SessionCache(max_count=4, max_bytes=2_000_000)
    kept = cache.put(Blob(1_000_000))
    with pytest.raises(SmatError, match=r"takes 2\.5 MB, more than the whole session memory \(2\.0 MB"):
        cache.put(Blob(2_500_000))
    assert kept in cache and cache.stats.evictions == 0 and cache.stats.count == 1


def test_drop_ends_a_session_once():
    cache = SessionCache(max_count=4, max_bytes=100)
    session_id = cache.put(Blob(30))
    assert cache.drop(session_id) is True
    assert cache.drop(session_id) is False
    assert session_id not in cache
    assert (cache.stats.count, cache.stats.bytes, cache.stats.ended) == (0, 0, 1)
    with pytest.raises(UnknownSession):
        cache.get(session_id)


@pytest.mark.parametrize(
    ("session_id", "shown"),
    [
        ("nope", "'nope'"),
        (b"\xff\xfe", "'\ufffd\ufffd'"),  # not ASCII: never a key, shown printable
        ("x" * 500, "'" + "x" * 64 + "'..."),  # a long id is cut in the message
        (None, "'None'"),
    ],
)
def test_unknown_ids_are_one_clear_line(session_id, shown):
    cache = SessionCache(max_count=1, max_bytes=1)
    with pytest.raises(UnknownSession) as caught:
        cache.get(session_id)
    message = str(caught.value)
    assert message == f"unknown or expired session {shown}: embed the photo again for a new session id"
    assert "\n" not in message


@pytest.mark.parametrize(
    ("count", "size", "message"), [(0, 1, "count must be at least 1"), (1, 0, "memory must be positive")]
)
def test_bad_bounds_are_refused(count, size, message):
    with pytest.raises(SmatError, match=message):
        SessionCache(count, size)


def test_something_without_a_byte_size_is_refused():
    with pytest.raises(SmatError, match="no byte size"):
        SessionCache(1, 1).put(object())


def test_concurrent_use_keeps_the_bounds_and_the_byte_count():
    cache = SessionCache(max_count=5, max_bytes=60)
    rng = np.random.default_rng(0)
    sizes = [int(s) for s in rng.integers(1, 30, size=400)]
    errors = []

    def work(part: list[int]) -> None:
        try:
            for size in part:
                session_id = cache.put(Blob(size))
                # another thread's put may evict it at once: that is the bound at work
                with contextlib.suppress(UnknownSession):
                    assert cache.get(session_id).nbytes == size
                assert len(cache) <= 5
        except BaseException as err:  # surfaced below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(sizes[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    stats = cache.stats
    assert stats.created == 400 and stats.count <= 5 and stats.bytes <= 60
    assert stats.created - stats.evictions == stats.count
    assert sum(blob.nbytes for blob in cache._items.values()) == stats.bytes


# -- the session models, without Triton ------------------------------------------------------------
@dataclass(eq=False)
class FakeEmbedding:
    image: np.ndarray
    nbytes: int


class FakePredictor:
    """Embeds by keeping the image; "decodes" max(mean RGB, prompt), like the tiny contract model."""

    sizing = None  # no size policy: photos run at their own size

    def embed(self, image):
        return FakeEmbedding(image.copy(), int(image.nbytes))

    def predict(self, embedding, prompt=None, state=None):
        mean = embedding.image.mean(axis=1, keepdims=True)
        if prompt is None:
            return mean
        if prompt.shape != mean.shape:
            raise SmatError(f"prompt mask must be {list(mean.shape)}, got {list(prompt.shape)}")
        return np.maximum(mean, prompt)


def _models(**config) -> SessionModels:
    return SessionModels(FakePredictor(), ServeConfig(**config).validate())


def test_embed_then_click_decodes_the_cached_photo():
    models = _models(session_count=4)
    rng = np.random.default_rng(1)
    image = rng.random((1, 3, 20, 30), dtype=np.float32)
    answer = models.embed({"image": image})
    assert answer["session_id"].dtype.kind == "S" and answer["session_id"].shape == (1,)
    assert (int(answer["height"][0]), int(answer["width"][0])) == (20, 30)
    prompt = np.zeros((1, 1, 20, 30), np.float32)
    prompt[..., 5:10, 5:10] = 1
    session_id = answer["session_id"].astype(object)  # what PyTriton hands over for a BYTES input
    alpha = models.click({"session_id": session_id, "prompt": prompt})["alpha"]
    assert alpha.dtype == np.float32
    assert np.array_equal(alpha, np.maximum(image.mean(axis=1, keepdims=True), prompt))
    assert models.end({"session_id": session_id})["ended"].tolist() == [True]
    assert models.end({"session_id": session_id})["ended"].tolist() == [False]
    assert models.stats["embeds"] == 1 and models.stats["clicks"] == 1 and models.stats["ended"] == 1


def test_session_model_errors_are_bad_requests_with_one_line():
    models = _models()
    click, embed = models.callable("click"), models.callable("embed")
    image = np.zeros((1, 3, 20, 30), np.float32)
    session_id = embed([{"image": image}])[0]["session_id"]
    cases = [
        (click, {"session_id": np.array([b"0" * 32], dtype=object)}, "unknown or expired session '" + "0" * 32),
        (click, {"session_id": session_id, "prompt": np.zeros((1, 1, 5, 5), np.float32)}, "prompt mask must be"),
        (embed, {"image": np.zeros((1, 3, 20, MAX_SIDE + 1), np.float32)}, f"sides up to {MAX_SIDE}"),
        (embed, {"image": np.zeros((2, 3, 20, 30), np.float32)}, "a session holds one photo"),
    ]
    for call, data, reason in cases:
        with pytest.raises(BadRequest) as caught:
            call([data])
        assert reason in str(caught.value) and "\n" not in str(caught.value)
    assert click([{"session_id": session_id}])[0]["alpha"].shape == (1, 1, 20, 30)  # and the session still works
    assert models.stats["failed"] == 4


# -- where the pair comes from ---------------------------------------------------------------------
def _pair_folder(folder: Path, precision: str = "", whole: bool = True) -> Path:
    """A tiny pair (with manifests naming each other) under ``precision``'s file names, and a whole-model file."""
    encoder, decoder = make_tiny_pair(folder)
    if precision:
        names = {role: Path(pair_file(role, precision.removeprefix("_"))) for role in ("encoder", "decoder")}
        for role, path in (("encoder", encoder), ("decoder", decoder)):
            manifest = json.loads(path.with_suffix(".json").read_text())
            manifest["precision"] = precision.removeprefix("_")
            manifest["pair"]["partner"] = names["decoder" if role == "encoder" else "encoder"].name
            path.rename(folder / names[role])
            path.with_suffix(".json").unlink()
            (folder / names[role]).with_suffix(".json").write_text(json.dumps(manifest))
    if whole:
        (folder / f"smat{precision}.onnx").write_bytes(b"")
    return folder


def test_a_folder_with_the_pair_serves_sessions(tmp_path):
    folder = _pair_folder(tmp_path / "export")
    plan = plan_sessions(str(folder), None)
    assert plan.enabled and plan.source == str(folder) and plan.precision == "float32"
    assert whole_model(str(folder)) == str(folder / "smat.onnx")
    assert not plan_sessions(str(folder), False).enabled


def test_a_file_beside_the_pair_serves_sessions_when_asked(tmp_path):
    folder = _pair_folder(tmp_path / "export", "_fp16")
    (folder / "smat_fp16.json").write_text(json.dumps({"precision": "fp16"}))
    engine = str(folder / "smat_fp16.onnx")
    plan = plan_sessions(engine, None)
    assert not plan.enabled and "--sessions" in plan.reason
    plan = plan_sessions(engine, True)
    assert plan.enabled and plan.source == str(folder) and plan.precision == "fp16"
    assert whole_model(engine) == engine


def test_without_the_pair_sessions_are_off_or_an_error_when_asked(tmp_path):
    engine = tmp_path / "tiny.onnx"
    engine.write_bytes(b"")
    plan = plan_sessions(str(engine), None)
    assert not plan.enabled and "has no smat_encoder.onnx" in plan.reason
    with pytest.raises(SmatError, match=r"--sessions needs the interactive pair: .* export --interactive"):
        plan_sessions(str(engine), True)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(SmatError, match=r"has no smat\.onnx"):
        whole_model(str(empty))


def test_the_torch_engine_serves_sessions_only_when_asked():
    assert not plan_sessions("torch", None, torch_weights=True).enabled
    assert plan_sessions("torch", True, torch_weights=True).source == "torch"
    assert plan_sessions("weights.ckpt", True, torch_weights=True).source == "weights.ckpt"


def test_the_summary_reports_sessions_only_when_served():
    assert len(ServeSummary({"requests": 1}).lines()) == 1
    lines = ServeSummary({}, {"embeds": 3, "clicks": 7, "misses": 1, "evictions": 2, "ended": 1}).lines()
    assert lines[0].startswith("sessions: 3 photos embedded, 7 clicks answered, 1 unknown or expired session ids")
    assert lines[1].startswith("stopped: ")


# -- the command line ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--session-count", "0"], "--session-count must be at least 1"),
        (["--session-memory", "0"], "--session-memory must be a positive number of MB"),
        (["--sessions", "--engine", "{tiny}"], "--sessions needs the interactive pair"),
        (["--engine", "{empty}"], "has no smat.onnx"),
    ],
)
def test_bad_session_settings_are_one_line_errors(run_cli, tiny_onnx, tmp_path, args, message):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [arg.format(tiny=tiny_onnx, empty=empty) for arg in args]
    ports = free_ports(3)
    defaults = ["--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2])]
    result = run_cli("serve", "--host", "127.0.0.1", *defaults, *args)
    assert result.code == 2, result.stderr
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_server_without_the_pair_says_sessions_are_off(tiny_server):
    assert re.search(r"^  sessions off: .* has no smat_encoder\.onnx", tiny_server.stdout, re.M)


def test_the_click_mix_against_a_server_without_sessions_is_one_line_error(run_cli, tiny_server):
    result = run_cli("loadtest", "--url", tiny_server.http_url, "--clicks", "2", "--requests", "1")
    assert result.code == 2, result.stderr
    assert result.stderr.startswith("error: model 'smat_embed' at ") and "--clicks needs a server with sessions" in (
        result.stderr
    )
    assert len(result.stderr.strip().splitlines()) == 1
    result = run_cli("loadtest", "--url", tiny_server.http_url, "--clicks", "-1")
    assert result.code == 2 and "--clicks cannot be negative" in result.stderr


def test_a_whole_model_and_a_pair_from_different_weights_are_refused(tmp_path):
    whole = tmp_path / "smat.onnx"
    whole.write_bytes(b"not read")
    (tmp_path / "smat.json").write_text(json.dumps({"source": {"weights_sha256": "a" * 64}}))
    check_same_weights(whole, "a" * 64)  # the same weights: served
    with pytest.raises(SmatError, match=r"smat\.onnx and the interactive pair were exported from different weights"):
        check_same_weights(whole, "b" * 64)
    (tmp_path / "smat.json").write_text(json.dumps({"source": {"weights_sha256": None}}))
    check_same_weights(whole, "b" * 64)  # an older manifest without the digest cannot be checked
    check_same_weights(tmp_path / "smat.plan", "b" * 64)  # a plan's sidecar records no weights digest
    check_same_weights(None, "b" * 64)  # the torch engine
