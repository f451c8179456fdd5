// smat-deploy app: open a photo, click, see the matte. Plain browser JavaScript, no build step.
// The photo is sent once (POST /api/photo -> a session id); every action then sends only the prompts
// (POST /api/matte) as the JSON prompt objects `smat-deploy matte --prompt` reads, in photo pixels.
"use strict";

const $ = (id) => document.getElementById(id);
const ui = {
  engine: $("engine"), file: $("file"), drop: $("drop"), dropHint: $("drop-hint"), error: $("error"),
  notice: $("notice"), photo: $("photo-canvas"), overlay: $("overlay"), alpha: $("alpha-canvas"),
  cutout: $("cutout-canvas"), onColour: $("colour-canvas"), colour: $("colour"), automatic: $("automatic"),
  undo: $("undo"), clear: $("clear"), brushSize: $("brush-size"), radius: $("radius"),
  embedMs: $("embed-ms"), clickMs: $("click-ms"), roundTrip: $("round-trip-ms"), mode: $("mode"),
  promptCount: $("prompt-count"), photoName: $("photo-name"), replay: $("replay"),
  downloadAlpha: $("download-alpha"), downloadCutout: $("download-cutout"), downloadPrompts: $("download-prompts"),
};

const SCRIBBLE_WIDTH = 5;  // the authors' scribble width (prompts.DEFAULT_SCRIBBLE_WIDTH)
const app = {
  info: null,        // GET /api/info
  upload: null,      // {bytes, name}: kept to embed again when a session expired
  session: null,     // POST /api/photo's answer
  prompts: [],       // JSON prompt objects
  goodCount: 0,      // prompts the server last accepted
  photoPixels: null, // ImageData of the photo
  alphaPng: null,    // Blob of the last alpha
  busy: false,
  again: false,
  drag: null,        // the box or stroke being drawn
};
window.smatApp = app;  // for debugging from the console

function setState(state) { document.body.dataset.state = state; }

function showError(message) {
  ui.error.textContent = message;
  ui.error.hidden = false;
}

function clearError() { ui.error.hidden = true; ui.error.textContent = ""; }

function showNotice(message) {
  ui.notice.textContent = message;
  ui.notice.hidden = !message;
}

// fetch that always ends in {ok, status, body}; a server that does not answer becomes an error message.
async function call(method, url, body, headers = {}) {
  let response;
  try {
    response = await fetch(url, { method, body, headers });
  } catch (err) {
    return { ok: false, status: 0, body: { error: `the server did not answer (${err.message}); is smat-deploy app still running?` } };
  }
  const type = response.headers.get("Content-Type") || "";
  let payload = null;
  if (type.includes("application/json")) {
    try { payload = await response.json(); } catch (err) { payload = { error: `unreadable answer: ${err.message}` }; }
  } else {
    payload = await response.blob();
  }
  if (!response.ok && !(payload && payload.error)) payload = { error: `the server answered ${response.status} ${response.statusText}` };
  return { ok: response.ok, status: response.status, body: payload };
}

function stem(name) { return (name || "photo").replace(/\.[^.]*$/, "") || "photo"; }

// -- engine ----------------------------------------------------------------------------------------
async function loadInfo() {
  const answer = await call("GET", "api/info");
  if (!answer.ok) { showError(answer.body.error); setState("error"); return; }
  app.info = answer.body;
  const info = app.info;
  ui.engine.textContent = `${info.engine} · ${info.backend} · ${info.precision} · ${info.device}` +
    (info.max_side ? ` · photos capped at ${info.max_side} px for the engine` : "");
  setState("idle");
}

// -- photo -----------------------------------------------------------------------------------------
async function openFile(file) {
  clearError();
  if (!file) return;
  const limit = app.info ? app.info.max_upload_mb * 1e6 : Infinity;
  if (file.size > limit) {
    showError(`${file.name} is ${(file.size / 1e6).toFixed(1)} MB, above the server's limit of ${app.info.max_upload_mb} MB`);
    return;
  }
  const bytes = await file.arrayBuffer();
  await embed({ bytes, name: file.name }, false);
}

// Send the photo, draw it, and matte the current prompts (none for a new photo: automatic).
async function embed(upload, keepPrompts) {
  setState("embedding");
  showNotice(keepPrompts ? "" : `embedding ${upload.name}...`);
  const answer = await call("POST", `api/photo?name=${encodeURIComponent(upload.name)}`, upload.bytes,
    { "Content-Type": "application/octet-stream" });
  if (!answer.ok) {
    showNotice("");
    showError(answer.body.error);
    setState(app.session ? "ready" : "error");
    return false;
  }
  const previous = app.session;
  app.upload = upload;
  app.session = answer.body;
  if (previous && previous.session !== app.session.session) {
    call("POST", "api/end", JSON.stringify({ session: previous.session }), { "Content-Type": "application/json" });
  }
  if (!keepPrompts) { app.prompts = []; app.goodCount = 0; }
  const photo = await call("GET", `api/session/${app.session.session}/photo.png`);
  if (!photo.ok) { showError(photo.body.error); setState("error"); return false; }
  await drawPhoto(photo.body);
  ui.embedMs.textContent = `${app.session.embed_ms.toFixed(0)} ms`;
  ui.photoName.textContent = `${app.session.name} (${app.session.width}x${app.session.height}` +
    (app.session.working_width !== app.session.width ? `, engine ${app.session.working_width}x${app.session.working_height})` : ")");
  showNotice("");
  if (!keepPrompts) await matte();
  return true;
}

async function drawPhoto(blob) {
  const bitmap = await createImageBitmap(blob, { colorSpaceConversion: "none" });
  const { width, height } = bitmap;
  for (const canvas of [ui.photo, ui.overlay, ui.alpha, ui.cutout, ui.onColour]) {
    canvas.width = width;
    canvas.height = height;
  }
  const context = ui.photo.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  app.photoPixels = context.getImageData(0, 0, width, height);
  ui.drop.classList.add("loaded");
  ui.dropHint.hidden = true;
  ui.drop.querySelector(".stack").hidden = false;
  for (const canvas of document.querySelectorAll("canvas.result")) canvas.hidden = false;
  drawOverlay();
}

// -- matting ---------------------------------------------------------------------------------------
// One request at a time; actions during a request are folded into one more request afterwards.
async function matte() {
  if (!app.session) return;
  if (app.busy) { app.again = true; return; }
  app.busy = true;
  try {
    do {
      app.again = false;
      await matteOnce(true);
    } while (app.again);
  } finally {
    app.busy = false;
  }
}

async function matteOnce(mayEmbedAgain) {
  setState("matting");
  clearError();
  const sent = app.prompts.slice();
  const started = performance.now();
  const body = JSON.stringify({ session: app.session.session, prompts: sent, automatic: ui.automatic.checked });
  const answer = await call("POST", "api/matte", body, { "Content-Type": "application/json" });
  if (answer.status === 410 && mayEmbedAgain && app.upload) {
    // The server let the session go (its cache is bounded): send the photo again, keep the prompts.
    showNotice("this photo's session expired on the server; embedding it again...");
    if (await embed(app.upload, true)) return matteOnce(false);
    return;
  }
  if (!answer.ok) {
    showError(answer.body.error);
    if (answer.status === 400 && app.prompts.length > app.goodCount) {  // drop the prompt the server refused
      app.prompts.length = app.goodCount;
      drawOverlay();
    }
    setState("ready");
    return;
  }
  const roundTrip = performance.now() - started;
  app.goodCount = sent.length;
  const result = answer.body;
  const bytes = Uint8Array.from(atob(result.alpha_png), (c) => c.charCodeAt(0));
  app.alphaPng = new Blob([bytes], { type: "image/png" });
  await drawResult(app.alphaPng);
  ui.clickMs.textContent = `${result.click_ms.toFixed(0)} ms`;
  ui.roundTrip.textContent = `${roundTrip.toFixed(0)} ms`;
  ui.mode.textContent = `${result.mode} (${result.prompt})`;
  ui.promptCount.textContent = String(sent.length);
  showNotice("");
  updateControls();
  document.body.dataset.results = String(Number(document.body.dataset.results) + 1);
  setState("ready");
}

async function drawResult(alphaPng) {
  const bitmap = await createImageBitmap(alphaPng, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  const width = ui.alpha.width, height = ui.alpha.height;
  const alphaContext = ui.alpha.getContext("2d", { willReadFrequently: true });
  alphaContext.drawImage(bitmap, 0, 0);
  const alpha = alphaContext.getImageData(0, 0, width, height).data;
  const photo = app.photoPixels.data;
  const cutout = new ImageData(width, height);
  const onColour = new ImageData(width, height);
  const [r, g, b] = hexColour(ui.colour.value);
  for (let i = 0; i < alpha.length; i += 4) {
    const a = alpha[i];
    const t = a / 255;
    cutout.data[i] = photo[i];
    cutout.data[i + 1] = photo[i + 1];
    cutout.data[i + 2] = photo[i + 2];
    cutout.data[i + 3] = a;
    onColour.data[i] = photo[i] * t + r * (1 - t);
    onColour.data[i + 1] = photo[i + 1] * t + g * (1 - t);
    onColour.data[i + 2] = photo[i + 2] * t + b * (1 - t);
    onColour.data[i + 3] = 255;
  }
  ui.cutout.getContext("2d").putImageData(cutout, 0, 0);
  ui.onColour.getContext("2d").putImageData(onColour, 0, 0);
}

function hexColour(hex) {
  const value = parseInt(hex.slice(1), 16);
  return [(value >> 16) & 255, (value >> 8) & 255, value & 255];
}

// -- prompts ---------------------------------------------------------------------------------------
function tool() { return document.querySelector('input[name="tool"]:checked').value; }

// A pointer event -> photo pixels (the canvases are scaled to the panel's width).
function photoPoint(event) {
  const rect = ui.overlay.getBoundingClientRect();
  const x = ((event.clientX - rect.left) * ui.overlay.width) / rect.width;
  const y = ((event.clientY - rect.top) * ui.overlay.height) / rect.height;
  return [x, y];
}

const clampTo = (value, high) => Math.min(Math.max(value, 0), high);

function add(prompt) {
  app.prompts.push(prompt);
  drawOverlay();
  updateControls();
  matte();
}

ui.overlay.addEventListener("pointerdown", (event) => {
  if (!app.session || event.button !== 0) return;
  const [x, y] = photoPoint(event);
  const width = ui.overlay.width, height = ui.overlay.height;
  const kind = tool();
  if (kind === "point") {
    const radius = Math.max(0, Math.round(Number(ui.radius.value) || 0));
    add({ type: "point", x: clampTo(Math.floor(x), width - 1), y: clampTo(Math.floor(y), height - 1), radius });
    return;
  }
  ui.overlay.setPointerCapture(event.pointerId);
  app.drag = { kind, start: [x, y], end: [x, y], points: [[Math.round(x), Math.round(y)]] };
});

ui.overlay.addEventListener("pointermove", (event) => {
  if (!app.drag) return;
  const [x, y] = photoPoint(event);
  app.drag.end = [x, y];
  const last = app.drag.points[app.drag.points.length - 1];
  if (Math.hypot(x - last[0], y - last[1]) >= 2) app.drag.points.push([Math.round(x), Math.round(y)]);
  drawOverlay();
});

function endDrag(event) {
  const drag = app.drag;
  if (!drag) return;
  app.drag = null;
  if (event.type === "pointercancel") { drawOverlay(); return; }
  const width = ui.overlay.width, height = ui.overlay.height;
  if (drag.kind === "box") {
    const x0 = clampTo(Math.round(Math.min(drag.start[0], drag.end[0])), width);
    const x1 = clampTo(Math.round(Math.max(drag.start[0], drag.end[0])), width);
    const y0 = clampTo(Math.round(Math.min(drag.start[1], drag.end[1])), height);
    const y1 = clampTo(Math.round(Math.max(drag.start[1], drag.end[1])), height);
    if (x1 - x0 < 2 || y1 - y0 < 2) { drawOverlay(); return; }  // a click with the box tool draws nothing
    add({ type: "box", x0, y0, x1, y1 });
    return;
  }
  const strokeWidth = drag.kind === "brush" ? Math.round(Number(ui.brushSize.value)) : SCRIBBLE_WIDTH;
  add({ type: "scribble", points: drag.points, width: strokeWidth });
}
ui.overlay.addEventListener("pointerup", endDrag);
ui.overlay.addEventListener("pointercancel", endDrag);

function drawOverlay() {
  const context = ui.overlay.getContext("2d");
  context.clearRect(0, 0, ui.overlay.width, ui.overlay.height);
  const scale = Math.max(1, ui.overlay.width / Math.max(1, ui.overlay.clientWidth || ui.overlay.width));
  const shapes = app.prompts.slice();
  if (app.drag) {
    const d = app.drag;
    if (d.kind === "box") {
      shapes.push({ type: "box", x0: Math.min(d.start[0], d.end[0]), y0: Math.min(d.start[1], d.end[1]),
        x1: Math.max(d.start[0], d.end[0]), y1: Math.max(d.start[1], d.end[1]) });
    } else {
      shapes.push({ type: "scribble", points: d.points, width: d.kind === "brush" ? Number(ui.brushSize.value) : SCRIBBLE_WIDTH });
    }
  }
  for (const shape of shapes) {
    context.strokeStyle = "rgba(0, 220, 120, 0.95)";
    context.fillStyle = "rgba(0, 220, 120, 0.35)";
    context.lineWidth = 2 * scale;
    if (shape.type === "point") {
      const r = shape.radius;
      context.fillRect(shape.x - r, shape.y - r, 2 * r + 1, 2 * r + 1);
      context.strokeRect(shape.x - r, shape.y - r, 2 * r + 1, 2 * r + 1);
      context.beginPath();
      context.arc(shape.x + 0.5, shape.y + 0.5, 3 * scale, 0, 2 * Math.PI);
      context.fillStyle = "rgba(255, 255, 255, 0.95)";
      context.fill();
    } else if (shape.type === "box") {
      context.strokeRect(shape.x0, shape.y0, shape.x1 - shape.x0, shape.y1 - shape.y0);
    } else if (shape.type === "scribble") {
      context.strokeStyle = "rgba(0, 220, 120, 0.6)";
      context.lineWidth = shape.width;
      context.lineCap = "square";
      context.lineJoin = "round";
      context.beginPath();
      shape.points.forEach(([x, y], i) => (i ? context.lineTo(x + 0.5, y + 0.5) : context.moveTo(x + 0.5, y + 0.5)));
      if (shape.points.length === 1) context.lineTo(shape.points[0][0] + 0.5, shape.points[0][1] + 0.5);
      context.stroke();
    }
  }
}

// -- controls and downloads ------------------------------------------------------------------------
function updateControls() {
  const loaded = Boolean(app.session);
  ui.undo.disabled = !loaded || app.prompts.length === 0;
  ui.clear.disabled = !loaded || app.prompts.length === 0;
  ui.downloadAlpha.disabled = !app.alphaPng;
  ui.downloadCutout.disabled = !app.alphaPng;
  ui.downloadPrompts.disabled = !loaded;
  ui.replay.textContent = loaded ? replayCommand() : "-";
}

function replayCommand() {
  const name = stem(app.session.name);
  const parts = ["smat-deploy matte", quote(app.session.name), "--prompt", quote(`${name}.json`)];
  if (app.info && app.info.replay_engine) parts.push(app.info.replay_engine);
  if (app.info && app.info.max_side) parts.push("--max-side", String(app.info.max_side));
  if (app.info && app.info.upsampling && app.info.upsampling !== "guided") parts.push("--upsampling", app.info.upsampling);
  if (ui.automatic.checked) parts.push("--state", "auto");
  parts.push("-o", quote(`${name}_alpha.png`));
  return parts.join(" ");
}

function quote(text) { return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replace(/'/g, "'\\''")}'`; }

function save(blob, filename) {
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = filename;
  document.body.appendChild(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

ui.downloadAlpha.addEventListener("click", () => save(app.alphaPng, `${stem(app.session.name)}_alpha.png`));
ui.downloadPrompts.addEventListener("click", () => {
  const text = JSON.stringify(app.prompts, null, 1);
  save(new Blob([text + "\n"], { type: "application/json" }), `${stem(app.session.name)}.json`);
});
ui.downloadCutout.addEventListener("click", async () => {
  const answer = await call("GET", `api/session/${app.session.session}/cutout.png`);
  if (!answer.ok) { showError(answer.body.error); return; }
  save(answer.body, `${stem(app.session.name)}_cutout.png`);
});

ui.undo.addEventListener("click", () => { app.prompts.pop(); drawOverlay(); updateControls(); matte(); });
ui.clear.addEventListener("click", () => { app.prompts = []; drawOverlay(); updateControls(); matte(); });
ui.automatic.addEventListener("change", () => { updateControls(); matte(); });
ui.colour.addEventListener("input", () => { if (app.alphaPng) drawResult(app.alphaPng); });
ui.file.addEventListener("change", () => { openFile(ui.file.files[0]); ui.file.value = ""; });

for (const name of ["dragenter", "dragover"]) {
  window.addEventListener(name, (event) => { event.preventDefault(); ui.drop.classList.add("over"); });
}
window.addEventListener("dragleave", () => ui.drop.classList.remove("over"));
window.addEventListener("drop", (event) => {
  event.preventDefault();
  ui.drop.classList.remove("over");
  const file = event.dataTransfer && event.dataTransfer.files[0];
  if (file) openFile(file);
});
window.addEventListener("pagehide", () => {
  if (app.session) navigator.sendBeacon("api/end", new Blob([JSON.stringify({ session: app.session.session })], { type: "application/json" }));
});

loadInfo();
