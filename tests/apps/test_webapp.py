"""The page's JSON API (``smat-deploy app``) over real HTTP, on a tiny interactive pair whose decoder returns
``prompt * state``: the alpha of any prompt set is its rasterised prompt in interactive mode and zero in
automatic mode, which the tests compute on their own."""

from __future__ import annotations

import base64
import io
import json
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from PIL import Image
from tiny_pair import make_tiny_pair

from smat_deploy import images
from smat_deploy.apps.webapp import AppConfig, AppServer, MattingService
from smat_deploy.runtime import Predictor
from smat_deploy.runtime.sizing import SizePolicy


def png(array: np.ndarray, **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format=save.pop("format", "PNG"), **save)
    return buffer.getvalue()


def photo(height=60, width=80, seed=0) -> np.ndarray:
    return (np.random.default_rng(seed).random((height, width, 3)) * 255).astype(np.uint8)


class Client:
    def __init__(self, url: str) -> None:
        self.url = url

    def request(self, method: str, path: str, body: bytes | None = None, content_type: str = "application/json"):
        request = urllib.request.Request(self.url + path, data=body, method=method)
        if body is not None:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                return response.status, response.headers.get("Content-Type", ""), response.read()
        except urllib.error.HTTPError as err:
            return err.code, err.headers.get("Content-Type", ""), err.read()

    def json(self, method: str, path: str, payload: object = None, raw: bytes | None = None):
        body = raw if raw is not None else (None if payload is None else json.dumps(payload).encode())
        status, _, data = self.request(method, path, body)
        return status, json.loads(data)

    def open_photo(self, data: bytes, name: str = "photo.png"):
        status, _, body = self.request("POST", f"/api/photo?name={name}", data, "application/octet-stream")
        return status, json.loads(body)

    def matte(self, session: str, prompts: list, automatic: bool = False):
        status, answer = self.json(
            "POST", "/api/matte", {"session": session, "prompts": prompts, "automatic": automatic}
        )
        if status == 200:
            answer["alpha"] = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["alpha_png"]))))
        return status, answer


@pytest.fixture(scope="module")
def tiny_pair_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pair")
    make_tiny_pair(folder)
    return folder


def start(folder, policy: SizePolicy | None = None, **config) -> AppServer:
    """A server on a free port, not started yet (``with start(...) as server:`` starts and stops it)."""
    service = MattingService(Predictor.open(folder, size_policy=policy), AppConfig(**config))
    return AppServer(service)


@pytest.fixture(scope="module")
def server(tiny_pair_dir):
    with start(tiny_pair_dir, engine="tiny") as server:
        yield server


@pytest.fixture
def client(server) -> Client:
    return Client(server.url)


def test_info_names_the_engine_and_the_limits(client):
    status, info = client.json("GET", "/api/info")
    assert status == 200
    assert (info["engine"], info["backend"], info["precision"], info["device"]) == (
        "tiny",
        "onnxruntime",
        "float32",
        "cpu",
    )
    assert info["max_upload_mb"] == 50 and info["max_megapixels"] == 50 and info["session_count"] == 8


def test_the_page_and_its_files_are_served(client):
    status, content_type, body = client.request("GET", "/")
    assert status == 200 and content_type.startswith("text/html") and b'src="app.js"' in body
    for name, kind in (("app.js", "text/javascript"), ("app.css", "text/css")):
        status, content_type, body = client.request("GET", f"/{name}")
        assert status == 200 and content_type.startswith(kind) and len(body) > 1000
    assert client.request("GET", "/secret.js")[0] == 404


def test_clicks_boxes_and_scribbles_give_the_rasterised_prompt(client):
    status, opened = client.open_photo(png(photo(60, 80)))
    assert status == 200, opened
    assert (opened["width"], opened["height"], opened["working_width"], opened["working_height"]) == (80, 60, 80, 60)
    session = opened["session"]
    prompts = [
        {"type": "point", "x": 10, "y": 12, "radius": 2},
        {"type": "box", "x0": 40, "y0": 30, "x1": 50, "y1": 35},
        {"type": "scribble", "points": [[60, 5], [70, 5]], "width": 3},
    ]
    status, answer = client.matte(session, prompts)
    assert status == 200, answer
    expected = np.zeros((60, 80), np.uint8)
    expected[10:15, 8:13] = 255  # the click's (2r+1) square around (x=10, y=12)
    expected[30:35, 40:50] = 255  # the half-open box
    expected[4:7, 59:72] = 255  # a 3 px wide stroke from x=60 to x=70 on row 5
    np.testing.assert_array_equal(answer["alpha"], expected)
    assert (answer["mode"], answer["prompt"], answer["prompts"]) == ("interactive", "mixed", 3)
    assert answer["click_ms"] >= 0

    status, answer = client.matte(session, prompts, automatic=True)  # the toggle: state 0, whatever the prompts
    assert status == 200 and answer["mode"] == "automatic"
    assert not answer["alpha"].any()
    status, answer = client.matte(session, [])  # cleared: automatic
    assert status == 200 and answer["mode"] == "automatic" and not answer["alpha"].any()


def test_the_cutout_is_the_photo_with_the_last_alpha(client):
    picture = photo(40, 50, seed=4)
    session = client.open_photo(png(picture))[1]["session"]
    status, answer = client.json("GET", f"/api/session/{session}/cutout.png")
    assert status == 400 and "click first" in answer["error"]
    client.matte(session, [{"type": "box", "x0": 5, "y0": 6, "x1": 20, "y1": 30}])
    status, content_type, body = client.request("GET", f"/api/session/{session}/cutout.png")
    assert status == 200 and content_type == "image/png"
    rgba = np.asarray(Image.open(io.BytesIO(body)))
    np.testing.assert_array_equal(rgba[..., :3], picture)
    expected = np.zeros((40, 50), np.uint8)
    expected[6:30, 5:20] = 255
    np.testing.assert_array_equal(rgba[..., 3], expected)


def test_a_photo_is_read_upright_from_its_exif_orientation(client):
    upright = photo(30, 70, seed=5)  # as a viewer shows it: 70 wide, 30 high
    stored = np.ascontiguousarray(np.rot90(upright, k=-1))  # stored turned a quarter clockwise: 30 wide, 70 high
    exif = Image.Exif()
    exif[0x0112] = 8  # orientation 8: a viewer turns the stored pixels a quarter counter-clockwise
    data = png(stored, exif=exif)
    status, opened = client.open_photo(data)
    assert status == 200, opened
    assert (opened["width"], opened["height"]) == (70, 30)
    status, _, body = client.request("GET", f"/api/session/{opened['session']}/photo.png")
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(body))), upright)
    # A click at x=60, y=5 on the upright photo lands there.
    status, answer = client.matte(opened["session"], [{"type": "point", "x": 60, "y": 5, "radius": 0}])
    assert status == 200 and answer["alpha"].shape == (30, 70) and answer["alpha"][5, 60] == 255
    assert answer["alpha"].sum() == 255


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "is empty"),
        (b"this is not a picture", "not an image format"),
        (png(photo(40, 40))[:60], "cannot read image"),  # a PNG cut short
        (png(photo(10, 40)), "SMat needs at least 14x14"),
    ],
    ids=["empty", "not-an-image", "truncated", "too-small"],
)
def test_bad_uploads_are_one_message(client, data, message):
    status, answer = client.open_photo(data, "bad.png")
    assert status == 400
    assert message in answer["error"] and "Traceback" not in answer["error"]
    assert client.json("GET", "/api/info")[0] == 200  # still serving


def test_a_decompression_bomb_is_refused_before_decoding(server):
    # A real 6000x6000 PNG (36 megapixels of zeros) is a few kilobytes: above a 1-megapixel limit it is refused
    # from its header, before Pillow allocates the pixels.
    bomb = png(np.zeros((6000, 6000), np.uint8), optimize=True)
    assert len(bomb) < 100_000
    service = MattingService(server.service.predictor, AppConfig(max_pixels=10**6))
    with AppServer(service) as small:
        status, answer = Client(small.url).open_photo(bomb, "bomb.png")
    assert status == 400
    assert "6000x6000 (36.0 megapixels), above the limit of 1 megapixels" in answer["error"]


def test_an_upload_above_the_size_limit_is_refused(server):
    service = MattingService(server.service.predictor, AppConfig(max_upload_bytes=20_000))
    with AppServer(service) as small:
        status, answer = Client(small.url).open_photo(png(photo(120, 160, seed=1)), "large.png")
        assert status == 413 and "larger than the server's limit of 0.02 MB" in answer["error"]
        assert Client(small.url).open_photo(png(photo(20, 20)))[0] == 200  # a small one still goes through


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        ({"prompts": [{"type": "point", "x": 200, "y": 5}]}, 400, "lies outside the 80x60 image"),
        ({"prompts": [{"type": "box", "x0": 90, "y0": 0, "x1": 99, "y1": 9}]}, 400, "does not overlap"),
        ({"prompts": [{"type": "mask", "path": "/etc/passwd"}]}, 400, "give masks to matte --mask"),
        ({"prompts": [{"type": "point", "x": "left", "y": 5}]}, 400, "must be a finite number"),
        ({"prompts": {"type": "point"}}, 400, "must be a list"),
        ({"prompts": [], "automatic": "yes"}, 400, '"automatic" must be true or false'),
        ({"prompts": [], "session": "f" * 32}, 410, "unknown or expired session"),
    ],
    ids=["click-outside", "box-outside", "mask-path", "bad-number", "not-a-list", "bad-toggle", "unknown-session"],
)
def test_bad_prompts_are_one_message_and_the_session_goes_on(client, payload, status, message):
    session = client.open_photo(png(photo(60, 80)))[1]["session"]
    answer_status, answer = client.json("POST", "/api/matte", {"session": session, **payload})
    assert answer_status == status and message in answer["error"]
    good_status, good = client.matte(session, [{"type": "point", "x": 1, "y": 1, "radius": 0}])
    assert good_status == 200 and good["alpha"][1, 1] == 255


def test_a_body_that_is_not_json_is_refused(client):
    status, answer = client.json("POST", "/api/matte", raw=b"{not json")
    assert status == 400 and answer["error"] == "the request body is not JSON"


def test_sessions_are_bounded_and_ended(tiny_pair_dir):
    with start(tiny_pair_dir, session_count=2) as small:
        client = Client(small.url)
        first, second, third = (client.open_photo(png(photo(seed=i)))[1]["session"] for i in range(3))
        assert client.matte(first, [])[0] == 410  # the least recently used went when the third came
        assert client.matte(second, [])[0] == 200 and client.matte(third, [])[0] == 200
        assert client.json("POST", "/api/end", {"session": second}) == (200, {"ended": True})
        status, answer = client.matte(second, [])
        assert status == 410 and "embed the photo again" in answer["error"]
        assert client.json("POST", "/api/end", {"session": second}) == (200, {"ended": False})


def test_photos_above_max_side_are_embedded_smaller_and_answered_at_full_size(tiny_pair_dir):
    with start(tiny_pair_dir, SizePolicy(max_side=40, upsampling="nearest")) as small:
        client = Client(small.url)
        opened = client.open_photo(png(photo(60, 80)))[1]
        assert (opened["width"], opened["height"], opened["working_width"], opened["working_height"]) == (
            80,
            60,
            40,
            30,
        )
        status, answer = client.matte(opened["session"], [{"type": "box", "x0": 20, "y0": 10, "x1": 60, "y1": 50}])
        assert status == 200 and answer["alpha"].shape == (60, 80)
        # The box, rasterised at 80x60, scaled to 40x30 and back with nearest neighbours: the same box.
        expected = np.zeros((60, 80), np.uint8)
        expected[10:50, 20:60] = 255
        np.testing.assert_array_equal(answer["alpha"], expected)


class FailingPredictor:
    """The real predictor, except that decoding raises as a broken engine would."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.info, self.sizing = predictor.info, predictor.sizing

    def embed(self, image):
        return self.predictor.embed(image)

    def predict(self, embedding, prompt=None, state=None):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")


def test_an_engine_failure_is_a_500_and_the_server_keeps_serving(server, capsys):
    service = MattingService(FailingPredictor(server.service.predictor), AppConfig())
    with AppServer(service) as failing:
        client = Client(failing.url)
        session = client.open_photo(png(photo()))[1]["session"]
        status, answer = client.json("POST", "/api/matte", {"session": session, "prompts": []})
        assert status == 500
        assert (
            answer["error"] == "the engine failed: RuntimeError: CUDA error: an illegal memory access was encountered"
        )
        assert client.json("GET", "/api/info")[0] == 200
        assert client.open_photo(png(photo(seed=2)))[0] == 200
    # The server's log: the same one line, no traceback (SMAT_DEPLOY_DEBUG=1 adds it).
    logged = capsys.readouterr().err
    assert logged == "error: the engine failed: RuntimeError: CUDA error: an illegal memory access was encountered\n"


def test_several_tabs_at_once_each_get_their_own_answer(client):
    sessions = [client.open_photo(png(photo(seed=10 + i)))[1]["session"] for i in range(4)]
    answers: dict[int, np.ndarray] = {}

    def tab(i: int) -> None:
        for _ in range(3):
            status, answer = client.matte(sessions[i], [{"type": "point", "x": 10 * i + 5, "y": 5, "radius": 1}])
            assert status == 200
            answers[i] = answer["alpha"]

    threads = [threading.Thread(target=tab, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i in range(4):
        expected = np.zeros((60, 80), np.uint8)
        expected[4:7, 10 * i + 4 : 10 * i + 7] = 255
        np.testing.assert_array_equal(answers[i], expected)


def test_the_page_answers_at_full_size_by_the_predictors_policy_with_guided_upsampling(tiny_pair_dir):
    policy = SizePolicy(max_side=40)
    with start(tiny_pair_dir, policy) as small:
        client = Client(small.url)
        status, info = client.json("GET", "/api/info")
        assert status == 200 and info["max_side"] == 40 and info["upsampling"] == "guided"
        assert info["memory_budget_mb"] > 0
        image = photo(60, 80)
        opened = client.open_photo(png(image))[1]
        assert (opened["working_width"], opened["working_height"]) == (40, 30)
        box = [{"type": "box", "x0": 20, "y0": 10, "x1": 60, "y1": 50}]
        status, answer = client.matte(opened["session"], box)
        assert status == 200 and answer["alpha"].shape == (60, 80)
    predictor = Predictor.open(tiny_pair_dir, size_policy=policy)
    expected = predictor.predict(predictor.embed(image), box)
    np.testing.assert_array_equal(answer["alpha"], images.to_uint8(expected))
