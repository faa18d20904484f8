// Landmark files in the browser, read into Kaggle-layout rows (1,629 float32 values a frame, NaN
// where not detected), as aslfr.sources and aslfr.posefile read them in Python:
//   readParquet(bytes) -> Map(sequence_id -> rows in frame order), a Kaggle-layout parquet
//   readPose(bytes)    -> { rows, fps }, a .pose file (pose-format 0.2) in MediaPipe Holistic's layout

import { parquetMetadata, parquetRead, parquetSchema } from "./vendor/hyparquet/src/index.js";
import { LANDMARK_COLUMNS, N_LANDMARKS, PARTS } from "./aslfr.js";

/** A Kaggle-layout parquet (sequence_id, frame and landmark columns; any subset of the 1,629
 * names, the rest NaN) -> Map(sequence_id -> [rows]) in sequence_id order (as aslfr.sources
 * gives them), each sequence's rows in frame order. */
export async function readParquet(bytes, name = "parquet") {
  let metadata;
  try {
    metadata = parquetMetadata(bytes);
  } catch (e) {
    throw new Error(`${name}: not a readable parquet file (${e.message})`);
  }
  const names = parquetSchema(metadata).children.map((c) => c.element.name);
  for (const need of ["sequence_id", "frame"])
    if (!names.includes(need)) throw new Error(`${name}: no '${need}' column (it has ${names.slice(0, 4).join(", ")}, ...)`);
  const landmark = names.filter((n) => LANDMARK_COLUMNS.includes(n));
  if (!landmark.length) throw new Error(`${name}: none of its columns is a Kaggle landmark column (x_face_0, ...)`);
  const where = Int32Array.from(landmark, (c) => LANDMARK_COLUMNS.indexOf(c));
  const columns = ["sequence_id", "frame", ...landmark];
  let table;
  await parquetRead({ file: bytes, metadata, columns, onComplete: (rows) => { table = rows; } });
  const sequences = new Map();
  for (const r of table) {
    const sid = Number(r[0]);
    const row = new Float32Array(LANDMARK_COLUMNS.length).fill(NaN);
    for (let k = 0; k < where.length; k++) row[where[k]] = r[k + 2] == null ? NaN : r[k + 2];
    if (!sequences.has(sid)) sequences.set(sid, []);
    sequences.get(sid).push([Number(r[1]), row]);
  }
  const out = new Map();
  for (const [sid, frames] of [...sequences].sort((a, b) => a[0] - b[0])) {
    frames.sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < frames.length; i++)
      if (frames[i][0] === frames[i - 1][0]) throw new Error(`${name}: sequence ${sid} has frame ${frames[i][0]} twice`);
    out.set(sid, frames.map(([, row]) => row));
  }
  return out;
}

const HAND_POINTS = ["WRIST", "THUMB_CMC", "THUMB_MCP", "THUMB_IP", "THUMB_TIP", "INDEX_FINGER_MCP",
  "INDEX_FINGER_PIP", "INDEX_FINGER_DIP", "INDEX_FINGER_TIP", "MIDDLE_FINGER_MCP", "MIDDLE_FINGER_PIP",
  "MIDDLE_FINGER_DIP", "MIDDLE_FINGER_TIP", "RING_FINGER_MCP", "RING_FINGER_PIP", "RING_FINGER_DIP",
  "RING_FINGER_TIP", "PINKY_MCP", "PINKY_PIP", "PINKY_DIP", "PINKY_TIP"];
const POSE_POINTS = ["NOSE", "LEFT_EYE_INNER", "LEFT_EYE", "LEFT_EYE_OUTER", "RIGHT_EYE_INNER", "RIGHT_EYE",
  "RIGHT_EYE_OUTER", "LEFT_EAR", "RIGHT_EAR", "MOUTH_LEFT", "MOUTH_RIGHT", "LEFT_SHOULDER", "RIGHT_SHOULDER",
  "LEFT_ELBOW", "RIGHT_ELBOW", "LEFT_WRIST", "RIGHT_WRIST", "LEFT_PINKY", "RIGHT_PINKY", "LEFT_INDEX",
  "RIGHT_INDEX", "LEFT_THUMB", "RIGHT_THUMB", "LEFT_HIP", "RIGHT_HIP", "LEFT_KNEE", "RIGHT_KNEE", "LEFT_ANKLE",
  "RIGHT_ANKLE", "LEFT_HEEL", "RIGHT_HEEL", "LEFT_FOOT_INDEX", "RIGHT_FOOT_INDEX"];
/** pose-format's Holistic components -> our parts and their points' names (aslfr/posefile.py). */
const COMPONENTS = [["POSE_LANDMARKS", "pose", POSE_POINTS],
  ["FACE_LANDMARKS", "face", Array.from({ length: 468 }, (_, i) => String(i))],
  ["LEFT_HAND_LANDMARKS", "left_hand", HAND_POINTS], ["RIGHT_HAND_LANDMARKS", "right_hand", HAND_POINTS]];

class Reader {
  constructor(bytes, name) {
    this.view = new DataView(bytes instanceof ArrayBuffer ? bytes : bytes.buffer, bytes.byteOffset ?? 0);
    this.at = 0;
    this.name = name;
  }
  need(n) {
    if (this.at + n > this.view.byteLength)
      throw new Error(`${this.name}: not a readable .pose file (it ends at byte ${this.view.byteLength}, inside a field)`);
  }
  f32() { this.need(4); const v = this.view.getFloat32(this.at, true); this.at += 4; return v; }
  u16() { this.need(2); const v = this.view.getUint16(this.at, true); this.at += 2; return v; }
  u32() { this.need(4); const v = this.view.getUint32(this.at, true); this.at += 4; return v; }
  str() {
    const n = this.u16();
    this.need(n);
    const s = new TextDecoder().decode(new Uint8Array(this.view.buffer, this.view.byteOffset + this.at, n));
    this.at += n;
    return s;
  }
  floats(n) {
    this.need(4 * n);
    const out = new Float32Array(n);
    for (let i = 0; i < n; i++) out[i] = this.view.getFloat32(this.at + 4 * i, true);
    this.at += 4 * n;
    return out;
  }
}

/** A .pose file (pose-format 0.2, MediaPipe Holistic's layout) -> { rows, fps }: coordinates
 * divided by the frame's width and height, a point with confidence 0 not detected (NaN); the
 * first person is read. */
export function readPose(bytes, name = ".pose") {
  const r = new Reader(bytes, name);
  const version = r.f32();
  if (Math.abs(version - 0.2) > 1e-6) throw new Error(`${name}: pose-format version ${version.toFixed(2)}; expected 0.2`);
  const [width, height] = [r.u16() || 1, r.u16() || 1];
  r.u16(); // depth
  const components = [];
  for (let c = r.u16(); c > 0; c--) {
    const [cname, format] = [r.str(), r.str()];
    const [nPoints, nLimbs, nColors] = [r.u16(), r.u16(), r.u16()];
    const points = Array.from({ length: nPoints }, () => r.str());
    r.need(4 * nLimbs + 6 * nColors);
    r.at += 4 * nLimbs + 6 * nColors;
    components.push({ name: cname, format, points });
  }
  const dims = components.length ? components[0].format.length - 1 : 0;
  if (dims < 2) throw new Error(`${name}: point format ${components[0]?.format}: expected XYC or XYZC`);
  const fps = r.f32();
  const frames = r.u32();
  const people = r.u16();
  const total = components.reduce((n, c) => n + c.points.length, 0);
  const data = r.floats(frames * people * total * dims);
  const confidence = r.floats(frames * people * total);
  if (people < 1) throw new Error(`${name}: no person in the file`);
  const byName = new Map();
  let offset = 0;
  for (const c of components) { byName.set(c.name, { ...c, offset }); offset += c.points.length; }
  const starts = {};
  let s = 0;
  for (const [part, n] of PARTS) { starts[part] = s; s += n; }
  const rows = Array.from({ length: frames }, () => new Float32Array(LANDMARK_COLUMNS.length).fill(NaN));
  for (const [cname, part, points] of COMPONENTS) {
    const c = byName.get(cname);
    if (!c) throw new Error(`${name}: no ${cname} component (it has ${[...byName.keys()].join(", ")}); expected MediaPipe Holistic's layout`);
    const index = new Map(c.points.map((p, k) => [p, k]));
    const missing = points.filter((p) => !index.has(p));
    if (missing.length) throw new Error(`${name}: component ${cname} lacks point(s) ${missing.slice(0, 3).join(", ")}`);
    points.forEach((p, i) => {
      const k = c.offset + index.get(p);
      const col = starts[part] + i;
      for (let f = 0; f < frames; f++) {
        if (!(confidence[f * people * total + k] > 0)) continue;
        const d = (f * people * total + k) * dims;
        rows[f][col] = data[d] / width;
        rows[f][N_LANDMARKS + col] = data[d + 1] / height;
        rows[f][2 * N_LANDMARKS + col] = dims >= 3 ? data[d + 2] : 0;
      }
    });
  }
  return { rows, fps };
}
