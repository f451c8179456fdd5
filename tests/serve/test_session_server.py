"""Sessions end to end: ``smat-deploy serve`` on a folder from ``export --interactive`` (real SMat weights, ONNX
Runtime on the CPU), official tritonclient clients over HTTP and gRPC.

The whole model ``smat`` on the same server is the independent expectation for every click: a click through
a session runs the exported encoder/decoder pair, the whole model runs ``smat.onnx``.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from serve_helpers import ServerProcess, call, click, embed, infer, require_pytriton
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.heavy

SESSION_COUNT = 3
#: Pair vs whole model, both exported in float32 from the same weights (measured ~1.4e-5 on the standard cases).
PAIR_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def session_server(exported, tmp_path_factory):
    require_pytriton()
    server = ServerProcess(
        [
            "--engine",
            str(exported["dir"]),
            "--device",
            "cpu",
            "--max-batch",
            "1",
            "--instances",
            "2",
            "--session-count",
            str(SESSION_COUNT),
        ],
        tmp_path_factory.mktemp("session-server"),
    ).start()
    yield server
    code = server.stop()
    assert code == 0, server.stderr[-2000:]


def _image(seed: int, height: int, width: int) -> np.ndarray:
    """A photo with structure: a bright disc on a noisy, darker background."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:height, :width]
    disc = ((yy - height / 2) ** 2 + (xx - width / 2) ** 2 < (min(height, width) / 3) ** 2).astype(np.float32)
    image = 0.2 + 0.6 * disc[None] + 0.2 * rng.random((3, height, width), dtype=np.float32)
    return np.clip(image, 0, 1)[None].astype(np.float32)


def _box(height: int, width: int, top: int, left: int, size: int) -> np.ndarray:
    prompt = np.zeros((1, 1, height, width), np.float32)
    prompt[..., top : top + size, left : left + size] = 1.0
    return prompt


def _error(send) -> str:
    with pytest.raises(InferenceServerException) as caught:
        send()
    return str(caught.value)


def test_the_banner_names_the_session_models(session_server):
    assert re.search(r"^  sessions 'smat_embed' .*'smat_click' .*'smat_end'", session_server.stdout, re.M)
    assert f"up to {SESSION_COUNT} sessions" in session_server.stdout


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_clicks_through_a_session_equal_the_whole_model(session_server, protocol):
    height, width = (42, 56) if protocol == "http" else (45, 60)  # 45x60: padded to the next patch
    image = _image(3, height, width)
    session_id = embed(session_server, protocol, image)
    size = call(session_server, protocol, "smat_embed", {"image": image}, ["height", "width"])
    assert [int(v[0]) for v in size] == [height, width]
    prompts = [
        (_box(height, width, 10, 12, 16), None),
        (_box(height, width, 2, 30, 9), np.ones((1, 1), np.float32)),
        (_box(height, width, 20, 5, 12), np.zeros((1, 1), np.float32)),  # a prompt, but automatic
        (None, None),  # automatic
    ]
    alphas, expectations = [], []
    for prompt, state in prompts:
        alpha = click(session_server, protocol, session_id, prompt, state)
        expected = infer(session_server, protocol, image, prompt, state)  # the whole model, same server
        assert alpha.shape == expected.shape == (1, 1, height, width) and alpha.dtype == np.float32
        assert expected.std() > 0.01  # a real matte, not a constant
        assert float(np.abs(alpha - expected).max()) <= PAIR_TOLERANCE
        alphas.append(alpha)
        expectations.append(expected)
    # Each click answers its own prompt: it is nearer its own expectation than any other click's (where they differ).
    distinct = 0
    for i, alpha in enumerate(alphas):
        own = float(np.abs(alpha - expectations[i]).max())
        for j, other in enumerate(expectations):
            if j != i and not np.array_equal(other, expectations[i]):
                assert own < float(np.abs(alpha - other).max()), (i, j)
                distinct += 1
    assert distinct >= 8  # the prompts changed the mattes (automatic with a prompt = automatic without)


def test_unknown_sessions_and_bad_prompts_are_errors_and_the_next_request_is_served(session_server):
    image = _image(5, 42, 42)
    prompt = _box(42, 42, 8, 8, 14)
    session_id = embed(session_server, "grpc", image)
    expected = infer(session_server, "grpc", image, prompt)
    bad = {
        "unknown id": (np.array([b"0" * 32], dtype=object), prompt, "unknown or expired session '" + "0" * 32),
        "garbage id": (np.array([b"\xff not an id"], dtype=object), prompt, "unknown or expired session"),
        "prompt of another size": (session_id, _box(40, 42, 8, 8, 14), "prompt mask must be"),
    }
    for protocol in ("http", "grpc"):
        for what, (bad_id, bad_prompt, reason) in bad.items():
            message = _error(
                lambda p=protocol, bad_id=bad_id, bad_prompt=bad_prompt: click(session_server, p, bad_id, bad_prompt)
            )
            assert reason in message, (what, message)
            assert "Traceback" not in message.split("BadRequest")[1], message  # the reason, not the server's stack
            alpha = click(session_server, protocol, session_id, prompt)  # and the next click is served
            assert float(np.abs(alpha - expected).max()) <= PAIR_TOLERANCE
    # Triton refuses what does not fit the session models' signatures.
    rank3 = _image(1, 42, 42)[0]
    assert "unexpected shape" in _error(lambda: call(session_server, "http", "smat_embed", {"image": rank3}, []))
    two = np.concatenate([image, image])
    assert "unexpected shape" in _error(lambda: call(session_server, "http", "smat_embed", {"image": two}, []))
    assert np.array_equal(infer(session_server, "http", image, prompt), expected)  # the whole model is unaffected


def test_the_least_recently_used_session_is_evicted_at_the_count_bound(session_server):
    images = [_image(10 + i, 28, 42) for i in range(SESSION_COUNT + 1)]
    prompt = _box(28, 42, 4, 10, 12)
    ids = [embed(session_server, "http", image) for image in images[:SESSION_COUNT]]
    click(session_server, "http", ids[0], prompt)  # the first photo is used again: the second is now the oldest
    ids.append(embed(session_server, "http", images[SESSION_COUNT]))
    message = _error(lambda: click(session_server, "http", ids[1], prompt))
    assert "unknown or expired session" in message
    for index in (0, 2, 3):
        alpha = click(session_server, "http", ids[index], prompt)
        expected = infer(session_server, "http", images[index], prompt)
        assert float(np.abs(alpha - expected).max()) <= PAIR_TOLERANCE


def test_an_ended_session_is_gone(session_server):
    session_id = embed(session_server, "grpc", _image(20, 28, 28))
    assert call(session_server, "grpc", "smat_end", {"session_id": session_id}, ["ended"])[0].tolist() == [True]
    assert call(session_server, "http", "smat_end", {"session_id": session_id}, ["ended"])[0].tolist() == [False]
    assert "unknown or expired session" in _error(lambda: click(session_server, "http", session_id))


@pytest.mark.parametrize("scheme", ["", "grpc://"])
def test_the_click_mix_load_test(run_cli, session_server, scheme):
    url = session_server.grpc_url if scheme else session_server.http_url
    clicks, photos = 3, 2
    result = run_cli(
        "loadtest", "--url", f"{scheme}{url}", "--clicks", clicks, "--requests", photos, "--concurrency", "2",
        "--size", "42x28", "--warmup", "1", "--json",
    )  # fmt: skip
    assert result.code == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["mix"] == "clicks" and report["failed"] == 0
    assert report["ok"] == report["requests_sent"] == photos * (clicks + 2)
    kinds = report["kinds"]
    assert {kind: (item["model"], item["ok"]) for kind, item in kinds.items()} == {
        "embed": ("smat_embed", photos),
        "click": ("smat_click", photos * clicks),
        "end": ("smat_end", photos),
    }
    for item in kinds.values():
        latency = item["latency_ms"]
        assert 0 < latency["p50"] <= latency["p90"] <= latency["p99"] <= latency["max"]
        assert item["throughput_rps"] == pytest.approx(item["ok"] / report["wall_s"], rel=1e-2)
    table = run_cli("loadtest", "--url", f"{scheme}{url}", "--clicks", "2", "--requests", "1", "--size", "42x28")
    assert table.code == 0, table.stderr
    rows = {line.split()[0]: line.split() for line in table.stdout.splitlines()[3:]}
    assert set(rows) == {"embed", "click", "end", "all"} and rows["click"][2] == "2"
