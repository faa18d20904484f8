// The page: the camera, a video file or a landmark file in; MediaPipe Holistic and the exported
// model on this device; the text growing in place, the finished phrases with their times, and
// what it costs. Built on aslfr.js, which anyone's app can use the same way.
//
// URL options: ?model=model.onnx (default), ?threads=N (ONNX Runtime's wasm threads: above 1
// only when the page is cross-origin isolated, as `aslfr serve` serves it), ?pace=0 (landmark
// files as fast as they go instead of at their frame rate), ?every=500&gap=1000 (ms).

import { Recognizer, holisticRow, median, N_LANDMARKS, PARTS } from "./aslfr.js";
import { readParquet, readPose } from "./landmark-files.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const modelUrl = params.get("model") ?? "model.onnx";
const threads = Math.max(1, Number(params.get("threads") ?? 1) | 0);
const pace = params.get("pace") !== "0";
const everyMs = Number(params.get("every") ?? 500);
const gapMs = Number(params.get("gap") ?? 1000);
const FILE_FPS = 30; // a video's or landmark file's frames, as `aslfr live` reads them

const HAND_LIMBS = [[0, 1], [0, 5], [0, 17], [1, 2], [2, 3], [3, 4], [5, 6], [5, 9], [6, 7], [7, 8], [9, 10],
  [9, 13], [10, 11], [11, 12], [13, 14], [13, 17], [14, 15], [15, 16], [17, 18], [18, 19], [19, 20]];
const POSE_LIMBS = [[11, 12], [11, 13], [13, 15], [15, 17], [15, 19], [15, 21], [17, 19], [12, 14], [14, 16],
  [16, 18], [16, 20], [16, 22], [18, 20], [11, 23], [12, 24], [23, 24]];
const COLOURS = { face: "#c9a3a3", left_hand: "#29c45a", pose: "#ff5a4a", right_hand: "#3f8cff" };
const START = {};
PARTS.reduce((s, [part, n]) => { START[part] = s; return s + n; }, 0);

/** What the page did, for whoever watches it (its tests among them). */
const state = window.aslfrPage = {
  ready: null, recognizer: null, holistic: null, running: false, source: null,
  holisticFrames: 0, holisticMs: [], frames: 0, partial: "", phrases: [], errors: [], rowOfImage, landmarksOf,
};

function status(text, error = false) {
  $("status").textContent = text;
  $("status").classList.toggle("error", error);
  if (error) {
    state.errors.push(text);
    console.error(text);
  }
}

// ---------------------------------------------------------------- MediaPipe Holistic
let pendingResult = null;

async function holistic() {
  if (state.holistic) return state.holistic;
  // eslint-disable-next-line no-undef
  const h = new Holistic({ locateFile: (file) => `vendor/holistic/${file}` });
  // as `aslfr landmarks` runs it (aslfr/tools/holistic.py): model complexity 1, no refined face
  h.setOptions({ modelComplexity: 1, smoothLandmarks: true, refineFaceLandmarks: false, enableSegmentation: false,
                 minDetectionConfidence: 0.5, minTrackingConfidence: 0.5 });
  h.onResults((results) => {
    const done = pendingResult;
    pendingResult = null;
    if (done) done(holisticRow(results));
  });
  await h.initialize();
  state.holistic = h;
  return h;
}

/** One picture (a video element, an image, a canvas) -> its Kaggle row. */
async function landmarksOf(image) {
  const h = await holistic();
  const t0 = performance.now();
  const row = await new Promise((resolve, reject) => {
    pendingResult = resolve;
    h.send({ image }).catch(reject);
  });
  state.holisticMs.push(performance.now() - t0);
  state.holisticFrames += 1;
  return row;
}

/** The Kaggle row of the picture at `url`, as the page makes it (one frame, tracking reset). */
async function rowOfImage(url) {
  const img = new Image();
  img.src = url;
  await img.decode();
  const h = await holistic();
  h.reset();
  const row = await landmarksOf(img);
  h.reset();
  return Array.from(row, (v) => (Number.isNaN(v) ? null : v));
}

// ---------------------------------------------------------------- drawing
const canvas = $("canvas");
const ctx = canvas.getContext("2d");

function draw(image, row) {
  if (image) {
    const w = image.videoWidth || image.naturalWidth || image.width;
    const h = image.videoHeight || image.naturalHeight || image.height;
    if (w && h && (canvas.width !== w || canvas.height !== h)) [canvas.width, canvas.height] = [w, h];
    ctx.drawImage(image, 0, 0, canvas.width, canvas.height);
  } else {
    ctx.fillStyle = "#222";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
  }
  const [W, H] = [canvas.width, canvas.height];
  const point = (part, i) => {
    const k = START[part] + i;
    const x = row[k], y = row[N_LANDMARKS + k];
    return Number.isFinite(x) && Number.isFinite(y) ? [x * W, y * H] : null;
  };
  const lines = (part, limbs) => {
    ctx.strokeStyle = COLOURS[part];
    ctx.lineWidth = Math.max(1.5, W / 320);
    ctx.beginPath();
    for (const [a, b] of limbs) {
      const p = point(part, a), q = point(part, b);
      if (p && q) { ctx.moveTo(...p); ctx.lineTo(...q); }
    }
    ctx.stroke();
  };
  const dots = (part, n, r) => {
    ctx.fillStyle = COLOURS[part];
    for (let i = 0; i < n; i++) {
      const p = point(part, i);
      if (p) ctx.fillRect(p[0] - r, p[1] - r, 2 * r, 2 * r);
    }
  };
  dots("face", 468, Math.max(0.7, W / 900));
  lines("pose", POSE_LIMBS);
  for (const hand of ["left_hand", "right_hand"]) { lines(hand, HAND_LIMBS); dots(hand, 21, Math.max(1.5, W / 320)); }
}

// ---------------------------------------------------------------- the text and the figures
function showPartial(text) {
  state.partial = text;
  $("text").textContent = text;
}

function addPhrase(p) {
  state.phrases.push(p);
  const tr = document.createElement("tr");
  for (const [cls, v] of [["t", p.text], ["", `${p.startSec.toFixed(1)}\u2013${p.endSec.toFixed(1)} s`], ["", p.frames]]) {
    const td = document.createElement("td");
    td.className = cls;
    td.textContent = v;
    tr.append(td);
  }
  $("phrases").prepend(tr);
}

function showFigures(stream) {
  $("f-frames").textContent = String(state.frames);
  const ms = state.holisticMs.slice(-30);
  $("f-landmarks").textContent = ms.length
    ? `MediaPipe Holistic ${(1e3 / (ms.reduce((a, b) => a + b, 0) / ms.length)).toFixed(1)} frames/s` : "read from a file";
  const up = stream?.stats.updateMs ?? [];
  if (up.length) $("f-update").textContent = `${median(up).toFixed(1)} ms median, ${up.at(-1).toFixed(1)} ms last (${up.length} updates)`;
}

// ---------------------------------------------------------------- sources
let stopRequested = false;
const tick = () => new Promise((r) => setTimeout(r, 0));

async function run(name, body) {
  stopRequested = true;
  while (state.running) await tick();
  stopRequested = false;
  state.running = true;
  state.source = name;
  state.frames = 0;
  $("stop").disabled = false;
  $("hint").hidden = true;
  const stream = state.recognizer.stream({ everyMs, gapMs, fps: FILE_FPS, onPhrase: addPhrase });
  const push = async (row, t, image) => {
    draw(image, row);
    state.frames += 1;
    showPartial(await stream.push(row, t));
    showFigures(stream);
  };
  try {
    status(`${name}\u2026`);
    await body(push);
    await stream.end();
    showPartial("");
    showFigures(stream);
    status(`${name}: done, ${state.frames} frames`);
  } catch (e) {
    status(`${name}: ${e.message ?? e}`, true);
  } finally {
    state.running = false;
    $("stop").disabled = true;
  }
}

async function camera() {
  let media;
  try {
    media = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (e) {
    status(`camera: not available (${e.name}: ${e.message})`, true);
    return;
  }
  const video = $("video");
  video.srcObject = media;
  await video.play();
  await run("camera", async (push) => {
    const start = performance.now();
    try {
      while (!stopRequested) {
        const t = (performance.now() - start) / 1e3;
        await push(await landmarksOf(video), t, video);
        await tick();
      }
    } finally {
      for (const track of media.getTracks()) track.stop();
      video.srcObject = null;
    }
  });
}

async function videoFile(file) {
  const video = $("video");
  const url = URL.createObjectURL(file);
  video.srcObject = null;
  video.src = url;
  try {
    await new Promise((resolve, reject) => {
      video.onloadeddata = resolve;
      video.onerror = () => reject(new Error("not a video this browser can play"));
    });
  } catch (e) {
    status(`${file.name}: ${e.message}`, true);
    URL.revokeObjectURL(url);
    return;
  }
  (await holistic()).reset();
  // every frame, as `aslfr live` reads a file: seek frame by frame at its frame rate
  await run(file.name, async (push) => {
    const frames = Math.max(1, Math.floor(video.duration * FILE_FPS));
    for (let i = 0; i < frames && !stopRequested; i++) {
      const seeked = new Promise((r) => { video.onseeked = r; });
      video.currentTime = Math.min(video.duration, (i + 0.5) / FILE_FPS);
      await seeked;
      await push(await landmarksOf(video), i / FILE_FPS, video);
    }
  });
  URL.revokeObjectURL(url);
}

async function imageFile(file) {
  const url = URL.createObjectURL(file);
  const img = new Image();
  img.src = url;
  try {
    await img.decode();
  } catch {
    status(`${file.name}: not an image this browser can read`, true);
    return;
  }
  (await holistic()).reset();
  await run(file.name, async (push) => push(await landmarksOf(img), 0, img));
  URL.revokeObjectURL(url);
}

async function playRows(name, rows, fps) {
  await run(name, async (push) => {
    const start = performance.now();
    for (let i = 0; i < rows.length && !stopRequested; i++) {
      if (pace) {
        const ahead = start + (i / fps) * 1e3 - performance.now();
        if (ahead > 0) await new Promise((r) => setTimeout(r, ahead));
      }
      await push(rows[i], i / fps, null);
    }
  });
}

async function landmarkFile(file) {
  const bytes = await file.arrayBuffer();
  const picker = $("sequence");
  if (file.name.endsWith(".pose")) {
    const { rows, fps } = readPose(bytes, file.name);
    picker.hidden = true;
    await playRows(file.name, rows, fps || FILE_FPS);
    return;
  }
  const sequences = await readParquet(bytes, file.name);
  picker.replaceChildren(...[...sequences].map(([sid, rows]) => {
    const o = document.createElement("option");
    o.value = String(sid);
    o.textContent = `sequence ${sid} (${rows.length} frames)`;
    return o;
  }));
  picker.hidden = false;
  picker.onchange = () => playRows(`${file.name}, sequence ${picker.value}`, sequences.get(Number(picker.value)), FILE_FPS);
  state.sequences = [...sequences.keys()];
  await picker.onchange();
}

async function open(file) {
  try {
    if (file.name.endsWith(".parquet") || file.name.endsWith(".pose")) await landmarkFile(file);
    else if (file.type.startsWith("image/")) await imageFile(file);
    else await videoFile(file);
  } catch (e) {
    status(`${file.name}: ${e.message ?? e}`, true);
  }
}

// ---------------------------------------------------------------- start
$("camera").onclick = () => camera();
$("stop").onclick = () => { stopRequested = true; };
$("open").onchange = (e) => e.target.files[0] && open(e.target.files[0]);
const stage = $("stage");
stage.ondragover = (e) => { e.preventDefault(); stage.classList.add("drop"); };
stage.ondragleave = () => stage.classList.remove("drop");
stage.ondrop = (e) => {
  e.preventDefault();
  stage.classList.remove("drop");
  if (e.dataTransfer.files[0]) open(e.dataTransfer.files[0]);
};
state.open = open;

state.ready = (async () => {
  try {
    const t0 = performance.now();
    state.recognizer = await Recognizer.load(modelUrl, { threads });
    const r = state.recognizer;
    $("f-model").textContent = `${modelUrl}: ${r.columns.length} columns, ${r.charmap.tokens.length} characters, ` +
      `${threads} thread${threads > 1 ? "s" : ""}${crossOriginIsolated ? "" : " (page not cross-origin isolated)"}, ` +
      `loaded in ${(performance.now() - t0).toFixed(0)} ms`;
    $("camera").disabled = false;
    $("hint").textContent = "Camera, or drop a video, a picture, a Kaggle-layout .parquet or a .pose file here";
    status("ready");
    return true;
  } catch (e) {
    $("hint").textContent = "The model did not load";
    status(String(e.message ?? e), true);
    return false;
  }
})();
