// aslfr in the browser: fingerspelling recognition with an exported model, on the user's device.
//
//   import { Recognizer } from "./aslfr.js";
//   const rec = await Recognizer.load("model.onnx");        // model.json (columns, map) beside it
//   await rec.transcribe(frames);                            // rows of 1,629 or the model's values
//   const s = rec.stream({ everyMs: 500, gapMs: 1000, fps: 30 });
//   for (const row of rows) show(await s.push(row));         // the open phrase's text so far
//   const last = await s.end();                              // the last phrase's text
//   s.phrases                                                // every finished phrase, with its times
//
// The same rules as the Python `aslfr.Recognizer` (aslfr/recognizer.py), line for line: a phrase
// opens at a frame with a hand (any right- or left-hand value detected) and ends once `gapMs` of
// stream time pass without one; its frames run from its first to its last frame with a hand, and
// its final text is the model's transcription of exactly those frames. While a phrase is open it
// is re-decoded every `everyMs` of stream time, and never more often than twice what an update
// takes. The model is the exported model.onnx itself (preprocessing, network and greedy decoding
// are in its graph), run by ONNX Runtime Web's wasm backend.

import * as ort from "./vendor/onnxruntime-web/ort.wasm.min.mjs";

export const PARTS = [["face", 468], ["left_hand", 21], ["pose", 33], ["right_hand", 21]];
export const N_LANDMARKS = PARTS.reduce((n, [, k]) => n + k, 0); // 543

/** Kaggle's 1,629 columns: x of face, left hand, pose, right hand, then y, then z. */
export const LANDMARK_COLUMNS = ["x", "y", "z"].flatMap(
  (a) => PARTS.flatMap(([part, n]) => Array.from({ length: n }, (_, i) => `${a}_${part}_${i}`)));

export const DEFAULT_EVERY_MS = 500;
export const DEFAULT_GAP_MS = 1000;

/** One Holistic result (the legacy @mediapipe/holistic solution's `onResults`) -> the Kaggle row
 * that `aslfr landmarks` writes for it: 1,629 float32 values, NaN where a part is not detected. */
export function holisticRow(results) {
  const row = new Float32Array(LANDMARK_COLUMNS.length).fill(NaN);
  const found = { face: results.faceLandmarks, left_hand: results.leftHandLandmarks,
                  pose: results.poseLandmarks, right_hand: results.rightHandLandmarks };
  let start = 0;
  for (const [part, n] of PARTS) {
    const pts = found[part];
    if (pts) {
      for (let i = 0; i < Math.min(n, pts.length); i++) {
        row[start + i] = pts[i].x;
        row[N_LANDMARKS + start + i] = pts[i].y;
        row[2 * N_LANDMARKS + start + i] = pts[i].z;
      }
    }
    start += n;
  }
  return row;
}

/** The character map of a model: tokens in index order, the blank after them. */
export class CharacterMap {
  constructor(mapping, where = "character map") {
    const entries = Object.entries(mapping ?? {});
    if (!entries.length) throw new Error(`${where}: expected an object of character -> index`);
    const idx = entries.map(([, v]) => v).sort((a, b) => a - b);
    if (!idx.every((v, i) => Number.isInteger(v) && v === i))
      throw new Error(`${where}: the indices must be the whole numbers 0 to ${entries.length - 1}, each once`);
    this.tokens = entries.sort((a, b) => a[1] - b[1]).map(([t]) => t);
    this.blank = this.tokens.length;
    this.nClasses = this.tokens.length + 1;
  }

  decode(indices) {
    let s = "";
    for (const i of indices) if (i >= 0 && i < this.blank) s += this.tokens[i];
    return s;
  }
}

function modelInfoUrl(modelUrl) {
  const u = new URL(modelUrl, globalThis.location?.href ?? "file:///");
  u.pathname = u.pathname.replace(/\.onnx$/, "") + ".json";
  return u.href;
}

async function fetchOk(url, what) {
  let r;
  try {
    r = await fetch(url);
  } catch (e) {
    throw new Error(`${url}: ${what} could not be fetched (${e.message})`);
  }
  if (!r.ok) throw new Error(`${url}: ${what} could not be fetched (HTTP ${r.status})`);
  return r;
}

/** An exported model.onnx with what an application needs around it. */
export class Recognizer {
  /** @param {string} modelUrl the exported model.onnx; its model.json (columns, character map) is
   * fetched from beside it. Options: threads (ONNX Runtime's wasm threads; more than 1 needs a
   * cross-origin isolated page, which `aslfr serve` gives), wasmPaths (where ort's .wasm lies). */
  static async load(modelUrl, { threads = 1, wasmPaths } = {}) {
    const infoUrl = modelInfoUrl(modelUrl);
    const [bytes, info] = await Promise.all([
      fetchOk(modelUrl, "the model").then((r) => r.arrayBuffer()),
      fetchOk(infoUrl, "the model's columns and character map").then(async (r) => {
        try {
          return await r.json();
        } catch (e) {
          throw new Error(`${infoUrl}: not valid JSON (${e.message})`);
        }
      }),
    ]);
    ort.env.wasm.numThreads = threads;
    ort.env.wasm.wasmPaths = wasmPaths ?? new URL("./vendor/onnxruntime-web/", import.meta.url).href;
    let session;
    try {
      session = await ort.InferenceSession.create(new Uint8Array(bytes), { executionProviders: ["wasm"],
        graphOptimizationLevel: "all" });
    } catch (e) {
      throw new Error(`${modelUrl}: not a loadable ONNX model (${String(e.message ?? e).split("\n")[0]})`);
    }
    return new Recognizer(session, info, modelUrl, threads);
  }

  constructor(session, info, source = "model", threads = 1) {
    const columns = info?.columns;
    if (!Array.isArray(columns) || !columns.length || !columns.every((c) => typeof c === "string"))
      throw new Error(`${source}: its model.json has no list of column names ("columns")`);
    if (session.inputNames[0] !== "inputs")
      throw new Error(`${source}: expected an input 'inputs' of [T, ${columns.length}]; the model has ` +
                      `'${session.inputNames[0]}'`);
    this.session = session;
    this.source = source;
    this.threads = threads;
    this.columns = columns;
    this.charmap = new CharacterMap(info.character_to_prediction_index, `${source}: character_to_prediction_index`);
    this.maxFrames = info.max_frames ?? null;
    this.handColumns = columns.flatMap((c, i) => (c.startsWith("x_right_hand_") || c.startsWith("x_left_hand_") ? [i] : []));
    if (!this.handColumns.length)
      throw new Error(`${source}: its columns include no hand landmark: phrases cannot be segmented`);
    const full = new Map(LANDMARK_COLUMNS.map((c, i) => [c, i]));
    this.fromFull = columns.every((c) => full.has(c)) ? Int32Array.from(columns, (c) => full.get(c)) : null;
  }

  /** One frame of 1,629 values (Kaggle's columns) or of the model's columns -> the model's columns. */
  select(row) {
    const n = row.length;
    if (n === this.columns.length) return Float32Array.from(row, (v) => (v == null ? NaN : v));
    if (n === LANDMARK_COLUMNS.length && this.fromFull) {
      const out = new Float32Array(this.columns.length);
      for (let k = 0; k < out.length; k++) {
        const v = row[this.fromFull[k]];
        out[k] = v == null ? NaN : v;
      }
      return out;
    }
    throw new Error(`a frame with ${n} values: expected ${LANDMARK_COLUMNS.length} (every landmark) or ` +
                    `${this.columns.length} (the model's columns)`);
  }

  /** Frames already in the model's columns -> text. */
  async decode(rows) {
    const width = this.columns.length;
    const data = new Float32Array(rows.length * width);
    rows.forEach((r, t) => data.set(r, t * width));
    const out = await this.session.run({ inputs: new ort.Tensor("float32", data, [rows.length, width]) });
    const y = out[this.session.outputNames[0]];
    const [len, classes] = y.dims;
    if (classes !== this.charmap.nClasses)
      throw new Error(`${this.source}: the model gives ${classes} classes, its character map ` +
                      `${this.charmap.tokens.length} characters and the blank`);
    const best = [];
    for (let i = 0; i < len; i++) {
      let k = 0;
      for (let c = 1; c < classes; c++) if (y.data[i * classes + c] > y.data[i * classes + k]) k = c;
      best.push(k);
    }
    return this.charmap.decode(best);
  }

  /** The text of one whole sequence: rows of 1,629 values or of the model's columns. */
  async transcribe(frames) {
    return this.decode(Array.from(frames, (r) => this.select(r)));
  }

  stream(options = {}) {
    return new Stream(this, options);
  }
}

export class Stream {
  constructor(rec, { everyMs = DEFAULT_EVERY_MS, gapMs = DEFAULT_GAP_MS, fps = 30, onPhrase = null } = {}) {
    if (!(everyMs > 0 && gapMs > 0 && fps > 0))
      throw new Error(`everyMs=${everyMs}, gapMs=${gapMs}, fps=${fps}: all must be positive`);
    Object.assign(this, { rec, everySec: everyMs / 1e3, gapSec: gapMs / 1e3, fps, onPhrase });
    this.phrases = [];
    this.stats = { updateMs: [], frames: 0, streamSec: 0 };
    this._frames = [];        // the open phrase, from its first hand frame
    this._handLen = 0;        // its frames up to the last with a hand
    this._firstSec = this._lastHandSec = 0;
    this._lastHandWall = 0;
    this._nextUpdateSec = 0;
    this._partial = "";
    this._t = 0;
    this._busy = Promise.resolve();
  }

  get open() {
    return this._frames.length > 0;
  }

  /** Add one frame (1,629 or the model's values, NaN where not detected) at stream time `t`
   * seconds (default: frames so far / fps); resolves to the open phrase's text so far ("" when
   * no phrase is open). Calls are taken in order, even when not awaited one by one. */
  push(frame, t = undefined) {
    const next = this._busy.then(() => this._push(frame, t));
    this._busy = next.catch(() => {});
    return next;
  }

  /** Finish the open phrase (if any); resolves to its text ("" if none was open). */
  end() {
    const next = this._busy.then(async () => (this._frames.length ? (await this._finish(false)).text : ""));
    this._busy = next.catch(() => {});
    return next;
  }

  async _push(frame, t) {
    const row = this.rec.select(frame);
    this._t = t === undefined ? this.stats.frames / this.fps : Number(t);
    this.stats.frames += 1;
    this.stats.streamSec = this._t + 1 / this.fps;
    const hand = this.rec.handColumns.some((k) => Number.isFinite(row[k]));
    if (hand) {
      if (!this._frames.length) [this._firstSec, this._nextUpdateSec, this._partial] = [this._t, this._t, ""];
      this._frames.push(row);
      [this._handLen, this._lastHandSec, this._lastHandWall] = [this._frames.length, this._t, performance.now()];
    } else if (this._frames.length) {
      this._frames.push(row);
      if (this._t - this._lastHandSec >= this.gapSec) {
        await this._finish(true);
        return "";
      }
    }
    if (this._frames.length && this._t >= this._nextUpdateSec) {
      this._partial = await this._decode();
      const costSec = this.stats.updateMs.at(-1) / 1e3;
      this._nextUpdateSec = this._t + Math.max(this.everySec, 2 * costSec);
    }
    return this._partial;
  }

  async _decode() {
    const t0 = performance.now();
    const text = await this.rec.decode(this._frames.slice(0, this._handLen));
    this.stats.updateMs.push(performance.now() - t0);
    return text;
  }

  async _finish(byPause) {
    const text = await this._decode();
    const phrase = { text, startSec: this._firstSec, endSec: this._lastHandSec, frames: this._handLen,
                     finalWallSec: (performance.now() - this._lastHandWall) / 1e3, byPause,
                     decodeMs: this.stats.updateMs.at(-1) };
    this.phrases.push(phrase);
    [this._frames, this._handLen, this._partial] = [[], 0, ""];
    if (this.onPhrase) this.onPhrase(phrase);
    return phrase;
  }
}

function median(xs) {
  if (!xs.length) return null;
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

export { median, ort };
