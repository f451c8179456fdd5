"""The real Triton server (``smat-deploy serve``) with official tritonclient HTTP and gRPC clients on loopback.

The tiny contract model computes ``max(mean RGB, prompt * state)``, so every alpha has an exact
expectation computed here with numpy, independently of the server and of the runtime.
"""

from __future__ import annotations

import http.client
import json
import socket
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from serve_helpers import (
    REQUEST_TIMEOUT_S,
    TINY_MAX_BATCH,
    TINY_MAX_SIDE,
    grpc_client,
    http_client,
    infer,
    infer_inputs,
)
from tritonclient.utils import InferenceServerException

from smat_deploy.contract import MAX_SIDE
from smat_deploy.runtime import Runtime
from smat_deploy.runtime.sizing import DEFAULT_SCALE_TO, SizePolicy


def _case(seed: int, batch: int, height: int, width: int, kind: str):
    """(image, prompt or None, state or None) for one request; ``kind`` picks how the prompt and state are sent."""
    rng = np.random.default_rng(seed)
    image = rng.random((batch, 3, height, width), dtype=np.float32)
    if kind == "auto":
        return image, None, None
    prompt = np.zeros((batch, 1, height, width), np.float32)
    prompt[:, :, height // 4 : height // 2, width // 3 : width // 2] = 1.0
    if kind == "derived":  # state left out: interactive where the prompt marks a pixel
        return image, prompt, None
    state = np.ones((batch, 1), np.float32) if kind == "interactive" else np.zeros((batch, 1), np.float32)
    return image, prompt, state


def _expected(image, prompt, state) -> np.ndarray:
    batch, _, height, width = image.shape
    prompt = np.zeros((batch, 1, height, width), np.float32) if prompt is None else prompt
    if state is None:
        state = (prompt.reshape(batch, -1) != 0).any(1, keepdims=True).astype(np.float32)
    return np.maximum(image.mean(axis=1, keepdims=True), prompt * state[:, :, None, None]).astype(np.float32)


def test_health_and_metadata_over_http_and_grpc(tiny_server):
    client = http_client(tiny_server)
    try:
        assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("smat")
        metadata = client.get_model_metadata("smat")
        config = client.get_model_config("smat")
    finally:
        client.close()
    assert {(t["name"], t["datatype"], tuple(t["shape"])) for t in metadata["inputs"]} == {
        ("image", "FP32", (-1, 3, -1, -1)),
        ("prompt", "FP32", (-1, 1, -1, -1)),
        ("state", "FP32", (-1, 1)),
    }
    assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["outputs"]] == [("alpha", "FP32", [-1, 1, -1, -1])]
    # Triton hands every request over on its own; smat-deploy's batcher groups them (see the shutdown test).
    assert config["max_batch_size"] == 0
    assert sum(group["count"] for group in config["instance_group"]) == 8
    assert {i["name"]: i["optional"] for i in config["input"]} == {"image": False, "prompt": True, "state": True}

    grpc = grpc_client(tiny_server)
    try:
        assert grpc.is_server_live() and grpc.is_server_ready() and grpc.is_model_ready("smat")
        grpc_metadata = grpc.get_model_metadata("smat", as_json=True)
    finally:
        grpc.close()
    assert [t["name"] for t in grpc_metadata["inputs"]] == ["image", "prompt", "state"]
    assert grpc_metadata["outputs"][0]["name"] == "alpha"


def test_concurrent_clients_get_the_in_process_runtime_alpha(tiny_server, serve_tiny_onnx):
    """16 requests from 8 concurrent clients, HTTP and gRPC, sizes and prompt kinds mixed: exact alpha."""
    shapes = [(1, 20, 30), (1, 31, 17), (2, 64, 48), (1, 20, 30), (1, 14, 14), (3, 40, 40), (1, 31, 17), (1, 64, 48)]
    kinds = ["auto", "interactive", "derived", "automatic_with_prompt"]
    cases = [
        (_case(i, *shapes[i % len(shapes)], kinds[i % len(kinds)]), "http" if i % 2 else "grpc") for i in range(16)
    ]

    def send(case):
        (image, prompt, state), protocol = case
        return infer(tiny_server, protocol, image, prompt, state)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(send, cases, timeout=REQUEST_TIMEOUT_S * 2))
    runtime = Runtime.open(serve_tiny_onnx, device="cpu")
    for ((image, prompt, state), _), alpha in zip(cases, results, strict=True):
        assert alpha.shape == (image.shape[0], 1, *image.shape[2:])
        assert alpha.dtype == np.float32
        assert np.array_equal(alpha, runtime(image, prompt, state))
        assert np.array_equal(alpha, _expected(image, prompt, state))


def _error(protocol: str, tiny_server, image, prompt=None, state=None) -> str:
    with pytest.raises(InferenceServerException) as caught:
        infer(tiny_server, protocol, image, prompt, state)
    return str(caught.value)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_malformed_requests_get_clear_errors_and_the_server_keeps_serving(tiny_server, protocol):
    image, prompt, _ = _case(0, 1, 24, 32, "interactive")
    bad = {
        "wrong dtype": ((image * 255).astype(np.int32), None, None, "expects 'FP32'"),
        "four channels": (np.zeros((1, 4, 24, 32), np.float32), None, None, "unexpected shape"),
        "rank 3": (np.zeros((3, 24, 32), np.float32), None, None, "unexpected shape"),
        "prompt of another size": (image, np.ones((1, 1, 10, 10), np.float32), None, "prompt mask must be"),
        "values above 1": (image * 2, None, None, "values must lie in [0, 1]"),
        "NaN": (np.full((1, 3, 24, 32), np.nan, np.float32), None, None, "values must lie in [0, 1]"),
        "too small": (np.zeros((1, 3, 10, 10), np.float32), None, None, "at least 14x14"),
        "state not 0/1": (image, prompt, np.full((1, 1), 0.5, np.float32), "state must be 0"),
        "interactive, empty prompt": (image, None, np.ones((1, 1), np.float32), "empty prompt"),
        "too many images": (
            np.zeros((TINY_MAX_BATCH + 1, 3, 24, 32), np.float32),
            None,
            None,
            f"at most {TINY_MAX_BATCH} images",
        ),
        "too large": (np.zeros((1, 3, 16, MAX_SIDE + 1), np.float32), None, None, f"sides up to {MAX_SIDE}"),
    }
    for what, (bad_image, bad_prompt, bad_state, reason) in bad.items():
        message = _error(protocol, tiny_server, bad_image, bad_prompt, bad_state)
        assert reason in message, (what, message)
        if "BadRequest" in message:  # smat-deploy's own checks answer with the reason, not the server's stack
            assert "smat_deploy/serve" not in message and "Traceback" not in message.split("BadRequest")[1]
        alpha = infer(tiny_server, protocol, image, prompt)  # and the next request is served
        assert np.array_equal(alpha, _expected(image, prompt, None))


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_photos_above_the_servers_cap_come_back_at_their_size_by_the_same_rule_as_matte(tiny_server, protocol):
    """The tiny server runs every photo at most TINY_MAX_SIDE px a side (--max-side): a larger request is scaled,
    run, and its alpha brought back by guided upsampling; the answer equals the same policy run in-process."""
    image, prompt, _ = _case(7, 1, 300, 400, "interactive")
    alpha = infer(tiny_server, protocol, image, prompt)
    assert alpha.shape == (1, 1, 300, 400)
    local = Runtime.open(serve_tiny_path(tiny_server), device="cpu", size_policy=SizePolicy(max_side=TINY_MAX_SIDE))
    plan = local.plan(1, 300, 400)
    assert plan is not None and (plan.run_width, plan.run_height) == (TINY_MAX_SIDE, 192)
    np.testing.assert_array_equal(alpha, local(image, prompt))
    assert not np.array_equal(alpha, _expected(image, prompt, None))  # it did not run at full size
    assert f"larger ones scaled to at most {DEFAULT_SCALE_TO} px" in tiny_server.stdout
    assert f"every photo at most {TINY_MAX_SIDE} px a side (--max-side)" in tiny_server.stdout
    assert "memory budget" in tiny_server.stdout


def serve_tiny_path(server) -> str:
    return server.args[server.args.index("--engine") + 1]


def test_a_missing_image_is_refused_by_triton(tiny_server):
    _, prompt, _ = _case(0, 1, 24, 32, "interactive")
    client = http_client(tiny_server)
    try:
        item = httpclient.InferInput("prompt", list(prompt.shape), "FP32")
        item.set_data_from_numpy(prompt)
        with pytest.raises(InferenceServerException, match="image"):
            client.infer("smat", [item])
    finally:
        client.close()


def test_a_bad_request_does_not_fail_its_neighbours(tiny_server):
    """Same-size valid and invalid requests at once: each invalid one fails alone, every valid one is exact."""
    valid = [_case(100 + i, 1, 36, 36, "interactive" if i % 2 else "auto") for i in range(10)]
    invalid = [(image * 3, prompt, state) for image, prompt, state in valid[:5]]
    jobs = [("ok", case) for case in valid] + [("bad", case) for case in invalid]
    jobs = [job for pair in zip(jobs[::2], jobs[1::2], strict=False) for job in pair] + jobs[len(jobs) // 2 * 2 :]

    def send(job):
        kind, (image, prompt, state) = job
        try:
            return kind, infer(tiny_server, "http", image, prompt, state), (image, prompt, state)
        except InferenceServerException as err:
            return kind, err, (image, prompt, state)

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(send, jobs, timeout=REQUEST_TIMEOUT_S * 2))
    for kind, result, inputs in outcomes:
        if kind == "ok":
            assert isinstance(result, np.ndarray), result
            assert np.array_equal(result, _expected(*inputs))
        else:
            assert isinstance(result, InferenceServerException)
            assert "values must lie in [0, 1]" in str(result)


def test_malformed_http_bodies_and_unknown_models_get_errors(tiny_server):
    host, port = tiny_server.http_url.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=REQUEST_TIMEOUT_S)
    try:
        for body in (b"{not json", json.dumps({"inputs": [{"name": "image"}]}).encode(), b""):
            connection.request("POST", "/v2/models/smat/infer", body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            text = response.read().decode()
            assert response.status in (400, 500), text  # Triton answers an unparsable body with 500
            assert json.loads(text)["error"]
        connection.request("POST", "/v2/models/nope/infer", b"{}", {"Content-Type": "application/json"})
        response = connection.getresponse()
        assert response.status in (400, 404) and "nope" in response.read().decode()
    finally:
        connection.close()
    image, prompt, _ = _case(3, 1, 24, 32, "interactive")
    assert np.array_equal(infer(tiny_server, "http", image, prompt), _expected(image, prompt, None))


def test_clients_that_disconnect_mid_request_do_not_disturb_the_server(tiny_server):
    host, port = tiny_server.http_url.split(":")
    image, prompt, _ = _case(4, 1, 200, 200, "interactive")
    inputs = infer_inputs(httpclient, image, prompt)
    body, header_length = httpclient.InferenceServerClient.generate_request_body(inputs)
    for sent in (len(body) // 2, len(body)):  # hang up half-way through the body, and right after sending it all
        with socket.create_connection((host, int(port)), timeout=30) as raw:
            head = (
                f"POST /v2/models/smat/infer HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/octet-stream\r\n"
                f"Inference-Header-Content-Length: {header_length}\r\nContent-Length: {len(body)}\r\n\r\n"
            )
            raw.sendall(head.encode() + body[:sent])
    grpc = grpc_client(tiny_server)
    try:  # a gRPC client that gives up long before the answer
        with pytest.raises(InferenceServerException, match="Deadline"):
            grpc.infer("smat", infer_inputs(grpcclient, image, prompt), client_timeout=0.001)
    finally:
        grpc.close()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda p: infer(tiny_server, p, image, prompt), ["http", "grpc"] * 2))
    for alpha in results:
        assert np.array_equal(alpha, _expected(image, prompt, None))
    client = http_client(tiny_server)
    try:
        assert client.is_server_ready()
    finally:
        client.close()
