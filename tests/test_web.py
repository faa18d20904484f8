"""The browser: aslfr.js and the page in a real headless Chromium (Debian's), served as `aslfr
serve` serves an export's web/ folder, with every request outside the page's origin blocked and
counted. The JavaScript Recognizer must decode what the Python one decodes, frame for frame."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from aslfr import browser
from aslfr.export import export
from aslfr.landmarks import LANDMARK_COLUMNS, PARTS
from aslfr.recognizer import Recognizer
from aslfr.sources import sequences_of, video_python
from aslfr.web import INSTALL_HINT, vendor_available

pytestmark = [pytest.mark.skipif(browser.available() is not None, reason=str(browser.available())),
              pytest.mark.skipif(not vendor_available(), reason=INSTALL_HINT)]

SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "web-page.png"


def to_page(frames: np.ndarray) -> dict:
    """Frames for page.evaluate (float32 in both runtimes: the parity tests compare decoded
    strings exactly, there is no bf16 here): float32 bytes in base64 (a list of 1,629-value lists with NaN
    takes Playwright half a minute to pass)."""
    frames = np.ascontiguousarray(frames, np.float32)
    return {"b64": base64.b64encode(frames.tobytes()).decode(), "shape": list(frames.shape)}


#: page-side: the frames of `to_page` back as rows of Float32Array
ROWS_JS = """const rows = (f) => { const b = Uint8Array.from(atob(f.b64), (c) => c.charCodeAt(0));
  const all = new Float32Array(b.buffer); const [t, w] = f.shape;
  return Array.from({ length: t }, (_, i) => all.subarray(i * w, (i + 1) * w)); };"""


def js(body: str) -> str:
    return f"async (arg) => {{ {ROWS_JS} {body} }}"


def open_page(b: browser.Browser, query: str = ""):  # noqa: ANN201
    page = b.open(f"index.html{query}")
    assert page.evaluate("() => window.aslfrPage.ready") is True, b.console_errors
    return page


def demo_sequences(data: Path, n: int) -> list[np.ndarray]:
    f = sorted((data / "train_landmarks").glob("*.parquet"))[0]
    return [frames for _, frames in list(sequences_of(f, LANDMARK_COLUMNS, None))[:n]]


def with_pauses(sequences: list[np.ndarray], gap_frames: int = 40) -> np.ndarray:
    pause = np.full((gap_frames, len(LANDMARK_COLUMNS)), np.nan, np.float32)
    return np.concatenate([part for s in sequences for part in (s, pause)])


def python_stream(rec: Recognizer, frames: np.ndarray) -> list[tuple]:
    s = rec.stream()
    for f in frames:
        s.push(f)
    s.end()
    return [(p.text, p.frames, round(p.start_s, 6), round(p.end_s, 6), p.by_pause) for p in s.phrases]


STREAM_JS = js("""const r = window.aslfrPage.recognizer; const s = r.stream();
  for (const f of rows(arg)) await s.push(f); await s.end();
  return s.phrases.map((p) => [p.text, p.frames, Math.round(p.startSec * 1e6) / 1e6,
                               Math.round(p.endSec * 1e6) / 1e6, p.byPause]);""")
TRANSCRIBE_JS = js("""const r = window.aslfrPage.recognizer; const out = [];
  for (const f of arg) out.push(await r.transcribe(rows(f))); return out;""")


def check_parity(web: Path, sequences: list[np.ndarray]) -> list[str]:
    rec = Recognizer(web / "model.onnx")
    max_frames = json.loads((web / "model.json").read_text())["max_frames"]
    assert any(len(s) > max_frames for s in sequences)  # longer than the model takes: resized inside it
    frames = with_pauses(sequences)
    wanted = python_stream(rec, frames)
    whole = [np.zeros((0, 1629), np.float32), sequences[0][:1], *sequences,
             np.concatenate(sequences)[:5000]]  # T = 0, 1, the sequences, and far more than max_frames
    wanted_whole = [rec.transcribe(s) for s in whole]
    with browser.Browser(web) as b:
        page = open_page(b)
        got = [tuple(p) for p in page.evaluate(STREAM_JS, to_page(frames))]
        got_whole = page.evaluate(TRANSCRIBE_JS, [to_page(s) for s in whole])
        assert b.blocked == [] and b.console_errors == []
    assert len(wanted) == len(sequences)
    assert got == wanted
    assert got_whole == wanted_whole
    return [w[0] for w in wanted]


def test_js_stream_and_transcribe_match_python(exported: Path, synth_dir: Path) -> None:
    texts = check_parity(exported / "web", demo_sequences(synth_dir, 5))
    assert any(texts)  # the model says something: the comparison is of real strings


@pytest.fixture(scope="module")
def other_alphabet(tmp_path_factory) -> tuple[Path, Path]:  # noqa: ANN001
    """A model of another character map (non-ASCII letters, a three-letter token), its output
    bias shaken so that it says varied strings of it, exported with its web/ folder."""
    import torch

    from test_charmap import SMALL, _dataset

    from aslfr.config import preset
    from aslfr.data.shards import ShardDataset
    from aslfr.train import train

    from conftest import TINY

    root = tmp_path_factory.mktemp("web_alphabet")
    data, prepared = _dataset(root, SMALL, seed=11)
    charmap = ShardDataset(prepared).charmap
    train(preset("demo").override(TINY + ["epochs=1"]).with_charmap(charmap), prepared, root / "run", progress=False)
    state = torch.load(root / "run" / "checkpoints" / "last.pt", weights_only=False)
    state["model"]["head_out.bias"] += torch.linspace(-1, 1, charmap.n_classes) * 4
    state["model"]["head_out.bias"][charmap.blank] -= 2
    torch.save(state, root / "shaken.pt")
    export(root / "shaken.pt", root / "export", max_frames=48, tflite=False, log=lambda *_: None)
    return data, root / "export" / "web"


def test_js_matches_python_for_another_character_map(other_alphabet) -> None:  # noqa: ANN001
    data, web = other_alphabet
    texts = check_parity(web, demo_sequences(data, 4))
    assert any(set(t) - set("abcdefghijklmnopqrstuvwxyz ") for t in texts)  # its own letters came out


def test_landmark_files_dropped_on_the_page_decode_as_in_python(exported: Path, synth_dir: Path,
                                                                 tmp_path: Path) -> None:
    """A Kaggle-layout parquet (with its sequence picker) and a .pose file, opened on the page."""
    from aslfr.posefile import write_pose

    parquet = sorted((synth_dir / "train_landmarks").glob("*.parquet"))[0]
    rec = Recognizer(exported / "web" / "model.onnx")
    sequences = list(sequences_of(parquet, LANDMARK_COLUMNS, None))
    sid, first = sequences[0]
    pose = write_pose(tmp_path / "one.pose", sequences[1][1], fps=30)
    with browser.Browser(exported / "web") as b:
        page = open_page(b, "?pace=0")
        page.set_input_files("#open", str(parquet))
        page.wait_for_function("() => window.aslfrPage.phrases.length >= 1 && !window.aslfrPage.running")
        state = page.evaluate("() => ({ sequences: window.aslfrPage.sequences, "
                              "phrases: window.aslfrPage.phrases.map((p) => [p.text, p.frames]) })")
        assert state["sequences"] == [s for s, _ in sequences]
        assert state["phrases"] == [[p[0], p[1]] for p in python_stream(rec, first)]
        # another sequence, picked in the list
        page.select_option("#sequence", str(sequences[2][0]))
        page.wait_for_function("() => window.aslfrPage.phrases.length >= 2 && !window.aslfrPage.running")
        page.set_input_files("#open", str(pose))
        page.wait_for_function("() => window.aslfrPage.phrases.length >= 3 && !window.aslfrPage.running")
        texts = page.evaluate("() => window.aslfrPage.phrases.map((p) => p.text)")
        shown = page.inner_text("#phrases")
        assert b.blocked == [] and b.console_errors == []
    assert texts[1:] == [python_stream(rec, sequences[2][1])[0][0], python_stream(rec, sequences[1][1])[0][0]]
    assert texts[0] in shown


def test_pose_reader_gives_the_rows_python_reads(exported: Path, synth_dir: Path, tmp_path: Path) -> None:
    from aslfr.posefile import read_pose, write_pose

    parquet = sorted((synth_dir / "train_landmarks").glob("*.parquet"))[0]
    _, frames = next(iter(sequences_of(parquet, LANDMARK_COLUMNS, None)))
    site = tmp_path / "site"
    shutil.copytree(exported / "web", site)
    write_pose(site / "one.pose", frames, fps=24)
    want, fps = read_pose(site / "one.pose")
    with browser.Browser(site) as b:
        page = open_page(b)
        got = page.evaluate("""async () => { const m = await import('./landmark-files.js');
            const { rows, fps } = m.readPose(await (await fetch('one.pose')).arrayBuffer(), 'one.pose');
            return { fps, rows: rows.map((r) => Array.from(r, (v) => (Number.isNaN(v) ? null : v))) }; }""")
        bad = page.evaluate("""async () => { const m = await import('./landmark-files.js');
            try { m.readPose(new Uint8Array([0, 0, 0, 0, 1]).buffer, 'bad.pose'); } catch (e) { return e.message; } }""")
    assert got["fps"] == fps == 24
    assert np.array_equal(np.array(got["rows"], dtype=np.float32), want, equal_nan=True)  # bit for bit
    assert bad.startswith("bad.pose: ")


def test_holistic_results_land_in_the_columns_aslfr_landmarks_uses(exported: Path) -> None:
    """The same Holistic results (every point numbered by part, index and axis) through the
    page's holisticRow and `aslfr landmarks`' landmarks_row: the same 1,629 values, hands named
    left and right alike, a missing part NaN in both."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src" / "aslfr" / "tools"))
    from types import SimpleNamespace

    from holistic import landmarks_row

    def points(part_no: int, n: int) -> list[dict]:
        return [{"x": part_no + i / 1000, "y": part_no + 0.25 + i / 1000, "z": -part_no - i / 1000} for i in range(n)]

    names = {"face": "faceLandmarks", "left_hand": "leftHandLandmarks", "pose": "poseLandmarks",
             "right_hand": "rightHandLandmarks"}
    with browser.Browser(exported / "web") as b:
        page = open_page(b)
        for missing in (None, "left_hand", "face"):
            results = {names[p]: points(k + 1, n) for k, (p, n) in enumerate(PARTS.items()) if p != missing}
            py = landmarks_row(SimpleNamespace(**{
                f"{p}_landmarks": SimpleNamespace(landmark=[SimpleNamespace(**q) for q in results[names[p]]])
                if names[p] in results else None for p in PARTS}))
            row = page.evaluate("""async (r) => { const m = await import('./aslfr.js');
                return Array.from(m.holisticRow(r), (v) => (Number.isNaN(v) ? null : v)); }""", results)
            assert np.array_equal(np.array(row, dtype=np.float32), py, equal_nan=True)


needs_video = pytest.mark.skipif(not video_python().is_file(), reason="video extra missing: run 'make video'")


def _photo() -> Path:
    out = subprocess.run([str(video_python()), "-c", "import skimage, os; print(os.path.join("
                          "os.path.dirname(skimage.__file__), 'data', 'astronaut.png'))"],
                         check=True, capture_output=True, text=True).stdout.strip()
    return Path(out)


@needs_video
def test_the_page_and_aslfr_landmarks_put_a_photo_s_landmarks_in_the_same_columns(exported: Path,
                                                                                  tmp_path: Path) -> None:
    """One photograph (a real person, shipped in scikit-image) through MediaPipe Holistic JS in
    the page and through `aslfr landmarks` (mediapipe 0.10.21 in Python). The builds differ:
    measured on this photo, the face's 468 points within 0.0013 in x, y and z (image-normalised
    units), the pose's head points (0-10) within 0.0075 in x and y, its body points (arms at the
    photo's edge, legs outside it) up to 0.15, and the pose's z (a coarse depth) by 0.1. The
    tolerances tested: face x, y, z 0.005, pose head x, y 0.02; and 90% of the landmarks lie
    nearer the same landmark of the other build than any other landmark does."""
    from aslfr.cli import main

    site = tmp_path / "site"
    shutil.copytree(exported / "web", site)
    shutil.copyfile(_photo(), site / "photo.png")
    assert main(["landmarks", str(site / "photo.png"), "--out", str(tmp_path / "photo.parquet")]) == 0
    table = pq.read_table(tmp_path / "photo.parquet")
    py = np.array([table.column(c).to_numpy()[0] for c in LANDMARK_COLUMNS], np.float32)
    with browser.Browser(site) as b:
        page = open_page(b)
        row = page.evaluate("() => window.aslfrPage.rowOfImage('photo.png')")
        assert b.blocked == [] and b.console_errors == []
    js_row = np.array([np.nan if v is None else v for v in row], np.float32)
    assert np.array_equal(np.isfinite(js_row), np.isfinite(py))  # the same parts found (no hand in this photo)
    xyz_py, xyz_js = py.reshape(3, -1).T, js_row.reshape(3, -1).T      # [543, 3]
    starts = dict(zip(PARTS, np.cumsum([0, *PARTS.values()])[:-1]))
    face = slice(starts["face"], starts["face"] + 468)
    head = slice(starts["pose"], starts["pose"] + 11)
    assert np.isfinite(xyz_py[face]).all() and np.isfinite(xyz_py[head]).all()
    assert np.abs(xyz_js[face] - xyz_py[face]).max() < 0.005
    assert np.abs(xyz_js[head, :2] - xyz_py[head, :2]).max() < 0.02
    found = np.isfinite(xyz_py[:, 0])
    a, c = xyz_js[found, :2], xyz_py[found, :2]
    nearest = np.argmin(((a[:, None] - c[None]) ** 2).sum(-1), 1)
    assert (nearest == np.arange(len(a))).mean() > 0.9


def write_y4m(path: Path, picture: Path, frames: int = 30) -> Path:
    """A 640x480 4:2:0 YUV4MPEG2 clip of a still picture, for Chromium's fake camera."""
    import imageio.v3 as iio

    rgb = iio.imread(picture)[..., :3].astype(np.float32)
    h, w = rgb.shape[:2]
    canvas = np.full((480, 640, 3), 128, np.float32)
    top, left = max(0, (h - 480) // 2), max(0, (w - 640) // 2)
    crop = rgb[top:top + 480, left:left + 640]
    y0, x0 = (480 - crop.shape[0]) // 2, (640 - crop.shape[1]) // 2
    canvas[y0:y0 + crop.shape[0], x0:x0 + crop.shape[1]] = crop
    r, g, b = canvas[..., 0], canvas[..., 1], canvas[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    u = (b - y) * 0.564 + 128
    v = (r - y) * 0.713 + 128
    sub = lambda p: p.reshape(240, 2, 320, 2).mean((1, 3))  # noqa: E731
    planes = b"".join(np.clip(p, 0, 255).round().astype(np.uint8).tobytes() for p in (y, sub(u), sub(v)))
    with open(path, "wb") as f:
        f.write(b"YUV4MPEG2 W640 H480 F30:1 Ip A1:1 C420jpeg\n")
        for _ in range(frames):
            f.write(b"FRAME\n" + planes)
    return path


@needs_video
def test_the_camera_and_a_video_file_run_holistic_in_the_page(exported: Path, tmp_path: Path) -> None:
    import imageio.v3 as iio

    clip = write_y4m(tmp_path / "clip.y4m", _photo())
    video = tmp_path / "clip.webm"  # VP8, which Chromium plays: three frames of the photo
    iio.imwrite(video, np.stack([iio.imread(_photo())[..., :3]] * 3), fps=30, codec="libvpx")
    flags = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
             f"--use-file-for-fake-video-capture={clip}"]
    with browser.Browser(exported / "web", args=flags, timeout_s=240) as b:
        page = open_page(b)
        page.click("#camera")
        page.wait_for_function("() => window.aslfrPage.holisticFrames >= 2")
        page.click("#stop")
        page.wait_for_function("() => !window.aslfrPage.running")
        seen = page.evaluate("() => ({ frames: window.aslfrPage.frames, errors: window.aslfrPage.errors, "
                             "source: window.aslfrPage.source, landmarks: document.getElementById('f-landmarks').textContent })")
        path = SCREENSHOT if os.environ.get("ASLFR_UPDATE_SCREENSHOT") else tmp_path / "page.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(path))  # the camera's last frame, its landmarks drawn over it
        # a video file opened on the page: every frame through Holistic, at 30 frames/s of video
        page.set_input_files("#open", str(video))
        page.wait_for_function("() => window.aslfrPage.source === 'clip.webm' && !window.aslfrPage.running")
        played = page.evaluate("() => ({ frames: window.aslfrPage.frames, errors: window.aslfrPage.errors, "
                               "status: document.getElementById('status').textContent })")
        assert b.blocked == [] and b.console_errors == []
    assert seen["source"] == "camera" and seen["frames"] >= 1 and seen["errors"] == []
    assert "MediaPipe Holistic" in seen["landmarks"]
    assert played == {"frames": 3, "errors": [], "status": "clip.webm: done, 3 frames"}


def _serve(folder: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "aslfr", "serve", str(folder), *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_aslfr_serve_serves_the_export_s_folder_isolated_and_stops_on_ctrl_c(exported: Path) -> None:
    proc = _serve(exported / "web", "--port", "0")
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"serving {exported / 'web'} at http://127.0.0.1:"), line
        url = line.split(" at ")[1].split()[0]
        with browser.Browser(None, url=url) as b:  # the page from the real server, outside requests blocked
            page = open_page(b)
            assert page.evaluate("() => crossOriginIsolated") is True   # COOP/COEP: threads may be used
            page.wait_for_function("() => document.getElementById('status').textContent === 'ready'")
            assert b.blocked == [] and b.console_errors == []
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert out.strip().endswith("stopped") and "Traceback" not in err


def test_aslfr_serve_refuses_a_bad_folder_or_model_in_one_line(exported: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    shutil.copytree(exported / "web", site)
    (site / "model.onnx").write_bytes(b"not a model")
    other = tmp_path / "other"
    shutil.copytree(exported / "web", other)
    info = json.loads((other / "model.json").read_text())
    info["character_to_prediction_index"] = {"a": 0, "b": 1}
    (other / "model.json").write_text(json.dumps(info))
    cases = [(tmp_path / "nowhere", "nowhere: not found"), (exported, "no index.html in it"),
             (site, "model.onnx: not a loadable ONNX model"), (other, "are not those of the model.onnx beside it")]
    for folder, says in cases:
        run = subprocess.run([sys.executable, "-m", "aslfr", "serve", str(folder), "--port", "0"],
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 2 and says in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_the_page_says_in_one_line_when_its_model_does_not_load(exported: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    shutil.copytree(exported / "web", site)
    (site / "model.onnx").write_bytes(b"not a model")
    with browser.Browser(site, check=False) as b:
        page = b.open("index.html")
        assert page.evaluate("() => window.aslfrPage.ready") is False
        said = page.inner_text("#status")
        assert b.blocked == []
    assert "model.onnx: not a loadable ONNX model" in said and "\n" not in said


def test_export_writes_web_and_a_rerun_without_it_removes_it(exported: Path, trained_run: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    web = exported / "web"
    assert (web / "index.html").is_file() and (web / "aslfr.js").is_file()
    assert (web / "model.onnx").read_bytes() == (exported / "model.onnx").read_bytes()
    info = json.loads((web / "model.json").read_text())
    assert info["max_frames"] == 48 and len(info["columns"]) == 200 and len(info["character_to_prediction_index"]) == 59
    assert json.loads((exported / "export.json").read_text())["web"]["files"] >= 20
    out = tmp_path / "export"
    shutil.copytree(exported, out)
    ckpt = trained_run / "checkpoints" / "last.pt"
    said = []
    export(ckpt, out, max_frames=48, tflite=False, web=False, log=said.append)
    assert not (out / "web").exists() and not any(p.name.startswith(".") for p in out.iterdir())
    assert "web" not in json.loads((out / "export.json").read_text())
    monkeypatch.setenv("ASLFR_WEB_MODULES", str(tmp_path / "none"))
    export(ckpt, out, max_frames=48, tflite=False, log=said.append)
    assert not (out / "web").exists() and any("web/ not written" in s and "make web" in s for s in said)
