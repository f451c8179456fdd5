"""The page of ``smat-deploy app`` in a real browser: Chromium (Debian's package, which ``make test`` installs)
driven by Playwright with real pointer events, against the real command line serving the fine-tuned export.

What the page shows is checked against :class:`~smat_deploy.Predictor` run here on the same photo and
prompts, read back both from the page's downloads and from its canvas. Screenshots of each step are saved
under the test's temporary folder (and copied to ``$SMAT_SCREENSHOTS`` when it is set).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tiny_pair import make_tiny_pair

from smat_deploy import images
from smat_deploy import prompts as P
from smat_deploy.apps.webapp import AppConfig, AppServer, MattingService
from smat_deploy.runtime import Predictor

pytestmark = pytest.mark.heavy

REPO = Path(__file__).resolve().parents[2]
SHARED_PHOTOS = REPO.parent / "shared" / "data" / "matting"
#: Chromium without its background traffic (this machine's network is closed) and without a sandbox (root in CI).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TIMEOUT_MS = 120_000


def chromium_path() -> str:
    found = os.environ.get("SMAT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    message = "no Chromium on PATH (make test installs Debian's chromium: tools/install-chromium)"
    if os.environ.get("SMAT_BROWSER_TESTS") == "required":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def screenshots(tmp_path, request):
    """``shoot(page, name)``: a full-page screenshot, kept with the test (and in $SMAT_SCREENSHOTS)."""
    folder = tmp_path / "screenshots"
    folder.mkdir()

    def shoot(page, name: str) -> Path:
        path = folder / f"{request.node.name}-{name}.png"
        page.screenshot(path=path, full_page=True)
        if os.environ.get("SMAT_SCREENSHOTS"):
            Path(os.environ["SMAT_SCREENSHOTS"]).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(os.environ["SMAT_SCREENSHOTS"]) / path.name)
        return path

    return shoot


@pytest.fixture(scope="module")
def app_server(exported):
    """``smat-deploy app --engine <the fine-tuned export> --port 0`` in its own process; its address."""
    command = [sys.executable, "-m", "smat_deploy", "app", "--engine", str(exported["dir"]), "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
        if line.startswith("ready"):
            break
    if not lines or not lines[-1].startswith("ready"):
        process.kill()
        pytest.fail(f"smat-deploy app did not start: {''.join(lines)}{process.stderr.read()}")
    url = re.search(r"http://\S+/", lines[0]).group(0)
    yield url
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "stopped:" in stderr and "Traceback" not in stderr


@pytest.fixture(scope="module")
def photo_file(tmp_path_factory) -> Path:
    """A real photo from ../shared when it is there, else a generated one (a disc on a gradient)."""
    shared = SHARED_PHOTOS / "pymatting_lemur" / "lemur.png"
    if shared.is_file():
        return shared
    path = tmp_path_factory.mktemp("photo") / "disc.png"
    y, x = np.mgrid[0:180, 0:240]
    picture = np.stack([x / 240 * 255, y / 180 * 255, np.full_like(x, 90.0)], axis=-1)
    picture[(x - 120) ** 2 + (y - 90) ** 2 < 50**2] = (240, 200, 40)
    Image.fromarray(picture.astype(np.uint8)).save(path)
    return path


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    page.goto(url)
    page.wait_for_function("document.body.dataset.state === 'idle'", timeout=TIMEOUT_MS)
    page.errors = errors
    return page


def results(page) -> int:
    return int(page.evaluate("document.body.dataset.results"))


def wait_for_result(page, count: int) -> None:
    page.wait_for_function(f"Number(document.body.dataset.results) >= {count}", timeout=TIMEOUT_MS)
    page.wait_for_function("document.body.dataset.state === 'ready'", timeout=TIMEOUT_MS)


def load_photo(page, path: Path) -> None:
    before = results(page)
    page.set_input_files("#file", str(path))
    wait_for_result(page, before + 1)  # a new photo is matted automatically at once


def client_point(page, x: float, y: float) -> tuple[float, float]:
    """Photo pixel (x, y) -> the screen position of that pixel's centre on the page's prompt canvas."""
    box = page.locator("#overlay").bounding_box()
    width, height = page.evaluate(
        "[document.getElementById('overlay').width, document.getElementById('overlay').height]"
    )
    return box["x"] + (x + 0.5) * box["width"] / width, box["y"] + (y + 0.5) * box["height"] / height


def click(page, x: int, y: int) -> None:
    before = results(page)
    page.mouse.click(*client_point(page, x, y))
    wait_for_result(page, before + 1)


def drag(page, points: list[tuple[int, int]]) -> None:
    before = results(page)
    page.mouse.move(*client_point(page, *points[0]))
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*client_point(page, *point), steps=8)
    page.mouse.up()
    wait_for_result(page, before + 1)


def download(page, button: str, folder: Path) -> Path:
    with page.expect_download(timeout=TIMEOUT_MS) as info:
        page.click(button)
    target = folder / info.value.suggested_filename
    info.value.save_as(target)
    return target


def canvas_alpha(page) -> np.ndarray:
    """The alpha as the page draws it: the red channel of the alpha canvas."""
    width, height, data = page.evaluate(
        """() => { const c = document.getElementById('alpha-canvas');
                   const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                   return [c.width, c.height, Array.from(d.filter((_, i) => i % 4 === 0))]; }"""
    )
    return np.asarray(data, dtype=np.uint8).reshape(height, width)


def expected_alpha(predictor: Predictor, photo: Path, prompt_objects: list, automatic: bool = False) -> np.ndarray:
    """What Predictor gives for the photo and prompts, at 8 bits (the page's engine caps at 1024 px)."""
    picture = images.load_image(photo)
    assert max(picture.shape[:2]) <= 1024  # no cap involved: the engine sees the photo itself
    mask = P.rasterize(P.parse_prompts(prompt_objects), picture.shape[:2])
    state = 0.0 if automatic else None
    return images.to_uint8(np.asarray(predictor.predict(predictor.embed(picture), mask, state)))


def assert_same_alpha(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal at 8 bits, up to one level where two float runs round apart (different thread counts)."""
    assert actual.shape == expected.shape
    difference = np.abs(actual.astype(int) - expected.astype(int))
    assert difference.max() <= 1
    assert (difference > 0).mean() < 1e-3


@pytest.fixture(scope="module")
def predictor(exported) -> Predictor:
    return Predictor.open(exported["dir"])


def test_a_click_and_a_box_show_predictors_alpha(browser, app_server, photo_file, predictor, tmp_path, screenshots):
    page = open_page(browser, app_server)
    engine = page.locator("#engine").inner_text()
    assert "onnxruntime" in engine and "float32" in engine and "cpu" in engine
    load_photo(page, photo_file)
    width, height = Image.open(photo_file).size
    assert page.locator("#photo-name").inner_text() == f"{photo_file.name} ({width}x{height})"
    assert page.locator("#mode").inner_text() == "automatic (none)"
    screenshots(page, "1-opened")

    click_x, click_y = width // 2, height // 3
    click(page, click_x, click_y)
    box = (width // 4, height // 5, 3 * width // 4, 9 * height // 10)
    page.locator('input[name="tool"][value="box"]').check()
    drag(page, [box[:2], (box[0] + 20, box[1] + 30), box[2:]])
    screenshots(page, "2-click-and-box")

    prompt_objects = json.loads(download(page, "#download-prompts", tmp_path).read_text())
    assert [p["type"] for p in prompt_objects] == ["point", "box"]
    point, drawn = prompt_objects
    assert abs(point["x"] - click_x) <= 1 and abs(point["y"] - click_y) <= 1 and point["radius"] == 20
    assert all(abs(drawn[k] - v) <= 1 for k, v in zip(("x0", "y0", "x1", "y1"), box, strict=True))

    alpha_file = download(page, "#download-alpha", tmp_path)
    assert alpha_file.name == f"{photo_file.stem}_alpha.png"
    shown = np.asarray(Image.open(alpha_file))
    np.testing.assert_array_equal(canvas_alpha(page), shown)  # the canvas shows exactly the downloaded alpha
    assert_same_alpha(shown, expected_alpha(predictor, photo_file, prompt_objects))
    assert shown.std() > 10  # a real matte with structure, not a constant

    cutout = np.asarray(Image.open(download(page, "#download-cutout", tmp_path)))
    np.testing.assert_array_equal(cutout[..., 3], shown)
    np.testing.assert_array_equal(cutout[..., :3], np.asarray(Image.open(photo_file).convert("RGB")))

    embed_ms = float(page.locator("#embed-ms").inner_text().removesuffix(" ms"))
    click_ms = float(page.locator("#click-ms").inner_text().removesuffix(" ms"))
    assert embed_ms > 0 and click_ms > 0
    assert page.locator("#mode").inner_text() == "interactive (mixed)"
    assert page.locator("#prompt-count").inner_text() == "2"
    assert page.errors == []
    print(f"\npage timings on {photo_file.name}: embed {embed_ms:.0f} ms, last click {click_ms:.0f} ms")


def test_the_downloaded_prompts_replay_on_the_command_line(
    browser, app_server, photo_file, exported, tmp_path, run_cli, screenshots
):
    page = open_page(browser, app_server)
    load_photo(page, photo_file)
    width, height = Image.open(photo_file).size
    page.locator('input[name="tool"][value="brush"]').check()
    page.locator("#brush-size").fill("30")
    drag(page, [(width // 3, height // 2), (width // 2, height // 2 + 10), (2 * width // 3, height // 2)])
    page.locator('input[name="tool"][value="scribble"]').check()
    drag(page, [(width // 2, height // 4), (width // 2, height // 3)])
    screenshots(page, "brush-and-scribble")
    prompt_file = download(page, "#download-prompts", tmp_path)
    prompt_objects = json.loads(prompt_file.read_text())
    assert [(p["type"], p["width"]) for p in prompt_objects] == [("scribble", 30), ("scribble", 5)]
    page_alpha = np.asarray(Image.open(download(page, "#download-alpha", tmp_path)))

    replay = page.locator("#replay").inner_text()
    engine_file = exported["dir"] / "smat.onnx"
    assert replay == (
        f"smat-deploy matte {photo_file.name} --prompt {photo_file.stem}.json --engine {engine_file} "
        f"--max-side 1024 -o {photo_file.stem}_alpha.png"
    )
    out = tmp_path / "replayed.png"
    result = run_cli("matte", str(photo_file), "--prompt", str(prompt_file), "--engine", str(engine_file),
                     "--max-side", "1024", "-o", str(out))  # fmt: skip
    assert result.code == 0, result.stderr
    # The command line runs the whole model (smat.onnx), the page the pair: equal to float rounding.
    assert_same_alpha(np.asarray(Image.open(out)), page_alpha)


def test_automatic_clear_and_undo(browser, app_server, photo_file, predictor, tmp_path):
    page = open_page(browser, app_server)
    load_photo(page, photo_file)
    width, height = Image.open(photo_file).size
    click(page, width // 2, height // 2)
    click(page, width // 3, height // 2)
    assert page.locator("#prompt-count").inner_text() == "2"

    before = results(page)
    page.locator("#automatic").check()
    wait_for_result(page, before + 1)
    assert page.locator("#mode").inner_text() == "automatic (point)"
    assert page.locator("#replay").inner_text().endswith(f"--state auto -o {photo_file.stem}_alpha.png")
    prompt_objects = json.loads(download(page, "#download-prompts", tmp_path).read_text())
    shown = np.asarray(Image.open(download(page, "#download-alpha", tmp_path)))
    assert_same_alpha(shown, expected_alpha(predictor, photo_file, prompt_objects, automatic=True))

    page.locator("#automatic").uncheck()
    wait_for_result(page, before + 2)
    before = results(page)
    page.click("#undo")
    wait_for_result(page, before + 1)
    assert page.locator("#prompt-count").inner_text() == "1"
    page.click("#clear")
    wait_for_result(page, before + 2)
    assert page.locator("#prompt-count").inner_text() == "0"
    assert page.locator("#mode").inner_text() == "automatic (none)"
    assert page.locator("#clear").is_disabled()


def test_a_corrupt_file_shows_an_error_and_the_page_goes_on(browser, app_server, photo_file, tmp_path, screenshots):
    page = open_page(browser, app_server)
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    page.set_input_files("#file", str(broken))
    page.wait_for_selector("#error:not([hidden])", timeout=TIMEOUT_MS)
    message = page.locator("#error").inner_text()
    assert message.startswith("cannot read image broken.jpg:") and "Traceback" not in message
    screenshots(page, "corrupt-file")

    text = tmp_path / "notes.png"
    text.write_text("hello")
    page.set_input_files("#file", str(text))
    page.wait_for_function("document.getElementById('error').textContent.includes('notes.png')", timeout=TIMEOUT_MS)

    load_photo(page, photo_file)  # the same tab still works
    assert page.locator("#error").is_hidden()
    assert page.errors == []


def test_an_upload_above_the_limit_is_refused_on_the_page(browser, tiny_page_server, tmp_path):
    page = open_page(browser, tiny_page_server(max_upload_bytes=5_000))
    large = tmp_path / "large.png"
    Image.fromarray((np.random.default_rng(0).random((100, 100, 3)) * 255).astype(np.uint8)).save(large)
    page.set_input_files("#file", str(large))
    page.wait_for_selector("#error:not([hidden])", timeout=TIMEOUT_MS)
    assert "above the server's limit of 0.005 MB" in page.locator("#error").inner_text()


@pytest.fixture
def tiny_page_server(tmp_path):
    """``make(wrap=None, **config)``: a page server on a tiny pair whose alpha is the rasterised prompt
    (interactive) or zero (automatic); ``wrap`` wraps its predictor."""
    make_tiny_pair(tmp_path / "pair")
    servers = []

    def make(wrap=None, **config) -> str:
        predictor = Predictor.open(tmp_path / "pair")
        service = MattingService(wrap(predictor) if wrap else predictor, AppConfig(**config))
        servers.append(AppServer(service).start())
        return servers[-1].url + "/"

    yield make
    for server in servers:
        server.stop()


class FailsOnce:
    """A predictor whose second decoder call fails as a broken engine would (the first is the photo's
    automatic matte); every other call is the real one."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor, self.info, self.sizing, self.calls = predictor, predictor.info, predictor.sizing, 0

    def embed(self, image):
        return self.predictor.embed(image)

    def predict(self, embedding, prompt=None, state=None):
        self.calls += 1
        if self.calls == 2:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return self.predictor.predict(embedding, prompt, state)


def test_tabs_have_their_own_sessions_and_an_expired_one_is_embedded_again(
    browser, tiny_page_server, tmp_path, screenshots
):
    url = tiny_page_server(session_count=1)
    photos = []
    for i, size in enumerate([(90, 120), (120, 90)]):
        path = tmp_path / f"tab{i}.png"
        Image.fromarray((np.random.default_rng(i).random((*size, 3)) * 255).astype(np.uint8)).save(path)
        photos.append(path)
    first, second = (browser.new_context().new_page() for _ in range(2))
    for page in (first, second):
        page.goto(url)
        page.wait_for_function("document.body.dataset.state === 'idle'", timeout=TIMEOUT_MS)
    load_photo(first, photos[0])
    load_photo(second, photos[1])  # the cache holds one photo: the first tab's session is gone

    click(first, 30, 40)  # answered after the page embeds its photo again
    assert first.locator("#error").is_hidden()
    alpha = canvas_alpha(first)
    expected = np.zeros((90, 120), np.uint8)
    expected[20:61, 10:51] = 255  # the click's 41x41 square around (30, 40): the tiny decoder returns the prompt
    np.testing.assert_array_equal(alpha, expected)
    screenshots(first, "first-tab")

    click(second, 50, 60)  # and now the second tab's session was the one to go
    expected = np.zeros((120, 90), np.uint8)
    expected[40:81, 30:71] = 255
    np.testing.assert_array_equal(canvas_alpha(second), expected)


def drop_file(page, path: Path) -> None:
    """Drop ``path`` on the page as a file dragged from the desktop would arrive (a DataTransfer with the file)."""
    before = results(page)
    page.evaluate(
        """([name, bytes]) => {
            const transfer = new DataTransfer();
            transfer.items.add(new File([new Uint8Array(bytes)], name));
            const drop = new DragEvent('drop', { dataTransfer: transfer, bubbles: true });
            document.getElementById('drop').dispatchEvent(drop);
        }""",
        [path.name, list(path.read_bytes())],
    )
    wait_for_result(page, before + 1)


def canvas_rgba(page, canvas_id: str) -> np.ndarray:
    width, height, data = page.evaluate(
        f"""() => {{ const c = document.getElementById('{canvas_id}');
                    const pixels = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                    return [c.width, c.height, Array.from(pixels)]; }}"""
    )
    return np.asarray(data, dtype=np.uint8).reshape(height, width, 4)


def test_a_dropped_exif_rotated_photo_is_shown_upright_with_its_cutout_and_colour(browser, tiny_page_server, tmp_path):
    page = open_page(browser, tiny_page_server())
    upright = (np.random.default_rng(7).random((60, 100, 3)) * 255).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6  # a viewer turns the stored pixels a quarter clockwise
    path = tmp_path / "phone.png"
    Image.fromarray(np.ascontiguousarray(np.rot90(upright, k=1))).save(path, exif=exif)
    drop_file(page, path)
    assert page.locator("#photo-name").inner_text() == "phone.png (100x60)"
    click(page, 90, 10)  # near the top-right corner of the upright photo
    alpha = canvas_alpha(page)
    expected = np.zeros((60, 100), np.uint8)
    expected[0:31, 70:100] = 255
    np.testing.assert_array_equal(alpha, expected)

    np.testing.assert_array_equal(canvas_rgba(page, "photo-canvas")[..., :3], upright)
    cutout = canvas_rgba(page, "cutout-canvas")
    np.testing.assert_array_equal(cutout[..., 3], expected)
    np.testing.assert_array_equal(cutout[expected == 255][:, :3], upright[expected == 255])
    page.locator("#colour").fill("#ff0000")  # the colour picker: the composite follows at once
    page.wait_for_function(
        "document.getElementById('colour-canvas').getContext('2d').getImageData(0, 59, 1, 1).data[0] === 255"
    )
    on_colour = canvas_rgba(page, "colour-canvas")
    assert (on_colour[expected == 0][:, :3] == (255, 0, 0)).all()  # background: the picked colour
    np.testing.assert_array_equal(on_colour[expected == 255][:, :3], upright[expected == 255])  # foreground: the photo


def test_a_decompression_bomb_is_refused_on_the_page(browser, tiny_page_server, tmp_path):
    page = open_page(browser, tiny_page_server(max_pixels=10**6))
    bomb = tmp_path / "bomb.png"
    Image.fromarray(np.zeros((6000, 6000), np.uint8)).save(bomb, optimize=True)  # 36 megapixels in a few KB
    page.set_input_files("#file", str(bomb))
    page.wait_for_selector("#error:not([hidden])", timeout=TIMEOUT_MS)
    assert page.locator("#error").inner_text() == (
        "image bomb.png is 6000x6000 (36.0 megapixels), above the limit of 1 megapixels"
    )
    assert page.errors == []


def test_the_page_reports_an_engine_failure_and_keeps_working(browser, tiny_page_server, tmp_path):
    page = open_page(browser, tiny_page_server(wrap=FailsOnce))
    picture = tmp_path / "p.png"
    Image.fromarray(np.full((40, 40, 3), 128, np.uint8)).save(picture)
    load_photo(page, picture)
    page.mouse.click(*client_point(page, 5, 5))
    page.wait_for_selector("#error:not([hidden])", timeout=TIMEOUT_MS)
    assert page.locator("#error").inner_text() == (
        "the engine failed: RuntimeError: CUDA error: an illegal memory access was encountered"
    )
    click(page, 30, 30)  # the next click is answered (with both clicks: the failed one was not the prompt's fault)
    assert page.locator("#error").is_hidden()
    assert page.locator("#prompt-count").inner_text() == "2"
    assert page.errors == []
