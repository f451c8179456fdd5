"""``smat-deploy app``: a local web page to open a photo, click, and see the matte.

The page (``apps/page/``: one HTML file, one script, one style sheet; no build step) talks to a small
JSON API served by aiohttp:

- ``GET /api/info``: the engine (backend, precision, device) and the server's limits;
- ``POST /api/photo?name=NAME`` with the photo file as the body: the photo is read like any photo (EXIF
  orientation applied, size limits, decompression bombs refused), embedded once at the size the predictor's
  size policy picks (:mod:`smat_deploy.runtime.sizing`), and kept under a new session id in a bounded cache
  (:class:`~smat_deploy.serve.sessions.SessionCache`);
- ``GET /api/session/ID/photo.png``: the photo as the server reads it (upright), which the page draws;
- ``POST /api/matte`` with ``{"session": ID, "prompts": [...], "automatic": false}``: one decoder run on
  the session's embedding; the prompts are the JSON prompt objects ``smat-deploy matte --prompt`` reads
  (points, boxes, scribbles), in the photo's pixels; the answer carries the alpha as a PNG;
- ``GET /api/session/ID/cutout.png``: the photo with the last alpha as its transparency;
- ``POST /api/end`` with ``{"session": ID}``: forget a session.

Every error is a JSON ``{"error": "..."}`` with a 4xx status for bad input (410 for an unknown or
expired session) and 500 when the engine itself fails; the server keeps serving either way. Engine
calls run one at a time on one worker thread, so several tabs share the CPU without oversubscribing it.
"""

from __future__ import annotations

import asyncio
import base64
import errno
import io
import json
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
from aiohttp import web
from PIL import Image

from smat_deploy import images
from smat_deploy import prompts as P
from smat_deploy.apps.photos import decode_prompts
from smat_deploy.errors import SmatError
from smat_deploy.runtime import PhotoEmbedding, Predictor
from smat_deploy.serve.sessions import SessionCache, UnknownSession

SERVICE = web.AppKey("service", object)
WORKER = web.AppKey("worker", ThreadPoolExecutor)

#: Files of the page, served from the package (``smat_deploy/apps/page``).
PAGE_FILES = {"index.html": "text/html", "app.js": "text/javascript", "app.css": "text/css"}
#: Prompt kinds the page sends; a mask travels as a file, which ``matte --mask`` takes instead.
PAGE_PROMPT_KINDS = ("point", "box", "scribble")


#: Longest side the page's engine runs at by default: clicks stay interactive on a CPU (about 0.2 s at 512x512).
APP_MAX_SIDE = 1024


@dataclass(frozen=True)
class AppConfig:
    """The server's limits. The size the engine runs a photo at is the predictor's size policy's."""

    max_upload_bytes: int = 50 * 10**6
    max_pixels: int = 50 * 10**6
    session_count: int = 8
    session_bytes: int = 2048 * 10**6
    #: How the page names the engine (the ``--engine`` argument).
    engine: str = ""
    #: The ``matte`` options that run the same weights, for the page's replay command line.
    replay_engine: str = ""


class EngineFailed(Exception):
    """The engine raised something other than a bad-input error: reported as a 500, the server goes on."""


@dataclass
class PhotoSession:
    """One photo in the cache: its upright pixels, its embedding, and the last alpha the page was sent."""

    name: str
    photo: np.ndarray  # uint8 HxWx3, as the server read it
    embedding: PhotoEmbedding
    alpha: np.ndarray | None = None  # uint8 HxW, the last answer
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def nbytes(self) -> int:
        height, width = self.photo.shape[:2]
        return int(self.embedding.nbytes + self.photo.nbytes + height * width)  # the alpha, once there is one


def png_bytes(array: np.ndarray) -> bytes:
    """A uint8 ``HxW`` or ``HxWxC`` array as PNG (fast compression: the page is on the same machine)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


class MattingService:
    """What the page asks of the engine, without HTTP: open a photo, matte a prompt set, end a session."""

    def __init__(self, predictor: Predictor, config: AppConfig) -> None:
        self.predictor = predictor
        self.config = config
        self.sessions = SessionCache(config.session_count, config.session_bytes)
        self.counts = {"photos": 0, "clicks": 0, "errors": 0}
        self._counts_lock = threading.Lock()

    def count(self, what: str) -> None:
        """One more photo, click or refused request (from any thread)."""
        with self._counts_lock:
            self.counts[what] += 1

    def info(self) -> dict:
        info = self.predictor.info
        config = self.config
        sizing = self.predictor.sizing
        policy = None if sizing is None else sizing.policy
        return {
            "engine": config.engine or str(info["source"]),
            "source": str(info["source"]),
            "backend": info["backend"],
            "precision": info["precision"],
            "device": info["device"],
            "max_side": None if policy is None else policy.max_side,
            "scale_to": None if policy is None else policy.scale_to,
            "upsampling": None if policy is None else policy.upsampling,
            "memory_budget_mb": None if sizing is None else round(sizing.budget.total_mb),
            "max_upload_mb": config.max_upload_bytes / 1e6,
            "max_megapixels": config.max_pixels / 1e6,
            "session_count": config.session_count,
            "session_memory_mb": config.session_bytes / 1e6,
            "replay_engine": config.replay_engine,
        }

    def open_photo(self, data: bytes, name: str) -> dict:
        """Read, cap and embed an uploaded photo; its session id and what the page shows about it."""
        photo = images.decode_image(data, name, self.config.max_pixels)
        start = time.perf_counter()
        embedding = _engine_call(self.predictor.embed, photo)
        embed_ms = (time.perf_counter() - start) * 1e3
        run_height, run_width = embedding.run_size
        session = PhotoSession(name, images.to_uint8(photo), embedding)
        session_id = self.sessions.put(session)
        self.count("photos")
        height, width = photo.shape[:2]
        return {
            "session": session_id,
            "name": name,
            "width": width,
            "height": height,
            "working_width": int(run_width),
            "working_height": int(run_height),
            "embed_ms": round(embed_ms, 1),
            "embedding_mb": round(embedding.nbytes / 1e6, 2),
        }

    def session(self, session_id: object) -> PhotoSession:
        session = self.sessions.get(session_id)
        assert isinstance(session, PhotoSession)
        return session

    def matte(self, session_id: object, prompt_objects: object, automatic: bool) -> tuple[dict, bytes]:
        """One prompt set on a session's embedding -> (timings and mode, the alpha as PNG)."""
        session = self.session(session_id)
        prompt_list = parse_page_prompts(prompt_objects)
        interactive = False if automatic else None
        matte = _engine_call(decode_prompts, self.predictor, session.embedding, prompt_list, interactive)
        alpha = images.to_uint8(matte.alpha)
        with session.lock:
            session.alpha = alpha
        self.count("clicks")
        summary = {
            "click_ms": round(matte.seconds * 1e3, 1),
            "mode": "interactive" if matte.interactive else "automatic",
            "prompt": str(P.prompt_kind(prompt_list)),
            "prompts": len(prompt_list),
        }
        return summary, png_bytes(alpha)

    def photo_png(self, session_id: object) -> bytes:
        return png_bytes(self.session(session_id).photo)

    def cutout_png(self, session_id: object) -> bytes:
        session = self.session(session_id)
        with session.lock:
            alpha = session.alpha
        if alpha is None:
            raise SmatError("no matte yet for this photo: click first")
        return png_bytes(np.concatenate([session.photo, alpha[..., None]], axis=-1))

    def end(self, session_id: object) -> bool:
        return self.sessions.drop(session_id)


def _engine_call(function: Callable[..., Any], *args: Any) -> Any:
    """Run the engine; anything but a bad-input error is the engine failing (:class:`EngineFailed`)."""
    try:
        return function(*args)
    except SmatError:
        raise
    except Exception as err:
        message = f"the engine failed: {type(err).__name__}: {err}".splitlines()[0]
        # One line in the server's log (the page shows the same); the traceback with SMAT_DEPLOY_DEBUG=1.
        print(f"error: {message}", file=sys.stderr, flush=True)
        if os.environ.get("SMAT_DEPLOY_DEBUG"):
            traceback.print_exc()
        raise EngineFailed(message) from err


def parse_page_prompts(prompt_objects: object) -> list[P.Prompt]:
    """The page's prompt list (``matte --prompt``'s JSON objects), masks excepted."""
    if not isinstance(prompt_objects, list):
        raise SmatError('"prompts" must be a list of prompt objects')
    for i, item in enumerate(prompt_objects):
        if isinstance(item, dict) and item.get("type") == "mask":
            raise SmatError(f"prompt[{i}]: the page sends {', '.join(PAGE_PROMPT_KINDS)}; give masks to matte --mask")
    return P.parse_prompts(prompt_objects)


# -- HTTP ------------------------------------------------------------------------------------------
def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def _errors(request: web.Request, handler: Callable) -> web.StreamResponse:
    """Every failure as ``{"error": ...}``: 400 bad input, 410 unknown session, 413 too large, 500 engine."""
    service: MattingService = request.app[SERVICE]
    try:
        return await handler(request)
    except UnknownSession as err:
        return _error(410, str(err))
    except SmatError as err:
        service.count("errors")
        return _error(400, str(err))
    except EngineFailed as err:
        service.count("errors")
        return _error(500, str(err))
    except web.HTTPRequestEntityTooLarge:
        service.count("errors")
        limit = service.config.max_upload_bytes / 1e6
        return _error(413, f"the upload is larger than the server's limit of {limit:g} MB (--max-upload-mb)")
    except web.HTTPException as err:
        return _error(err.status, err.reason)


async def _in_worker(request: web.Request, function: Callable[..., Any], *args: Any) -> Any:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(request.app[WORKER], function, *args)


async def _json_body(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise SmatError("the request body is not JSON") from None
    if not isinstance(body, dict):
        raise SmatError("the request body must be a JSON object")
    return body


async def _page(request: web.Request) -> web.Response:
    name = request.match_info.get("name", "index.html")
    if name not in PAGE_FILES:
        raise web.HTTPNotFound(reason=f"no page file {name}")
    text = resources.files("smat_deploy.apps").joinpath("page", name).read_text(encoding="utf-8")
    return web.Response(text=text, content_type=PAGE_FILES[name], headers={"Cache-Control": "no-cache"})


async def _info(request: web.Request) -> web.Response:
    return web.json_response(request.app[SERVICE].info())


async def _photo(request: web.Request) -> web.Response:
    service: MattingService = request.app[SERVICE]
    name = request.query.get("name", "upload")[:200] or "upload"
    data = await request.read()
    return web.json_response(await _in_worker(request, service.open_photo, data, name))


async def _matte(request: web.Request) -> web.Response:
    service: MattingService = request.app[SERVICE]
    body = await _json_body(request)
    automatic = body.get("automatic", False)
    if not isinstance(automatic, bool):
        raise SmatError('"automatic" must be true or false')
    summary, alpha = await _in_worker(request, service.matte, body.get("session"), body.get("prompts", []), automatic)
    return web.json_response({**summary, "alpha_png": base64.b64encode(alpha).decode("ascii")})


async def _session_png(request: web.Request) -> web.Response:
    service: MattingService = request.app[SERVICE]
    session_id, what = request.match_info["id"], request.match_info["what"]
    make = service.photo_png if what == "photo" else service.cutout_png
    data = await _in_worker(request, make, session_id)
    return web.Response(body=data, content_type="image/png", headers={"Cache-Control": "no-store"})


async def _end(request: web.Request) -> web.Response:
    body = await _json_body(request)
    return web.json_response({"ended": request.app[SERVICE].end(body.get("session"))})


def make_app(service: MattingService) -> web.Application:
    """The aiohttp application for ``service``; engine calls run on one worker thread."""
    app = web.Application(middlewares=[_errors], client_max_size=service.config.max_upload_bytes)
    app[SERVICE] = service
    app[WORKER] = ThreadPoolExecutor(max_workers=1, thread_name_prefix="smat-engine")
    app.router.add_get("/", _page)
    app.router.add_get("/{name:[a-z]+\\.(?:js|css|html)}", _page)
    app.router.add_get("/api/info", _info)
    app.router.add_post("/api/photo", _photo)
    app.router.add_post("/api/matte", _matte)
    app.router.add_get("/api/session/{id}/{what:photo|cutout}.png", _session_png)
    app.router.add_post("/api/end", _end)

    async def shutdown(app: web.Application) -> None:
        app[WORKER].shutdown(wait=True, cancel_futures=True)

    app.on_cleanup.append(shutdown)
    return app


class AppServer:
    """The page's server on its own thread and event loop (``start`` returns once it listens); for tests and tools."""

    def __init__(self, service: MattingService, host: str = "127.0.0.1", port: int = 0) -> None:
        self.service, self.host, self.port = service, host, port
        self._loop = asyncio.new_event_loop()
        self._runner: web.AppRunner | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="smat-app", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> AppServer:
        self._thread.start()
        try:
            asyncio.run_coroutine_threadsafe(self._start(), self._loop).result()
        except BaseException:
            self.stop()
            raise
        return self

    async def _start(self) -> None:
        self._runner = web.AppRunner(make_app(self.service), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the port the system gave for port 0

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result()
            self._runner = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> AppServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def serve_until_stopped(
    service: MattingService, host: str, port: int, on_ready: Callable[[AppServer], None] = lambda server: None
) -> None:
    """Serve the page until SIGINT or SIGTERM (in-flight requests finish first)."""
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            server = AppServer(service, host, port).start()
        except OSError as err:
            reason = os.strerror(err.errno).lower() if err.errno else str(err)
            hint = " (pick another --port)" if err.errno == errno.EADDRINUSE else ""
            raise SmatError(f"cannot listen on {host}:{port}: {reason}{hint}") from None
        try:
            on_ready(server)
            while not stop.wait(0.5):
                pass
        finally:
            server.stop()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
