"""The browser's copy of an exported model: a static site folder (`web/`), and `aslfr serve`.

    web/index.html          the page: camera, video or landmark file in, text out (app.js)
    web/aslfr.js            the JavaScript API: Recognizer.load(url), transcribe, stream
    web/landmark-files.js   Kaggle-layout parquet and .pose readers
    web/model.onnx          the exported model (preprocessing, network, greedy decoding)
    web/model.json          its columns, character map and maximum frames
    web/vendor/...          the pinned MediaPipe Holistic, ONNX Runtime Web and hyparquet files

Nothing is fetched from anywhere else: the folder works from any static host and offline. The
vendor files come from the npm packages pinned in package.json (`make web` runs `npm ci`), found
in `$ASLFR_WEB_MODULES` or the checkout's node_modules.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from aslfr.vocab import CharacterMap

PAGE_FILES = ("index.html", "app.js", "aslfr.js", "landmark-files.js")
#: (npm package, file or folder inside it, where it goes under web/vendor)
VENDOR = [
    ("onnxruntime-web", "dist/ort.wasm.min.mjs", "onnxruntime-web/ort.wasm.min.mjs"),
    ("onnxruntime-web", "dist/ort-wasm-simd-threaded.mjs", "onnxruntime-web/ort-wasm-simd-threaded.mjs"),
    ("onnxruntime-web", "dist/ort-wasm-simd-threaded.wasm", "onnxruntime-web/ort-wasm-simd-threaded.wasm"),
    ("hyparquet", "src", "hyparquet/src"),
    *[("@mediapipe/holistic", f, f"holistic/{f}") for f in (
        "holistic.js", "holistic.binarypb", "holistic_solution_packed_assets_loader.js",
        "holistic_solution_packed_assets.data", "holistic_solution_simd_wasm_bin.js",
        "holistic_solution_simd_wasm_bin.wasm", "holistic_solution_simd_wasm_bin.data",
        "holistic_solution_wasm_bin.js", "holistic_solution_wasm_bin.wasm",
        # model complexity 0 and 1 (the page runs 1, as `aslfr landmarks` does); not heavy (2, 27 MB)
        "pose_landmark_lite.tflite", "pose_landmark_full.tflite")],
]
MODEL_INFO = "model.json"
INSTALL_HINT = ("the browser's runtime files (npm packages) are not installed: run 'make web' "
                "(npm ci in the aslfr checkout), or set ASLFR_WEB_MODULES to a node_modules folder that holds them")


def node_modules() -> Path:
    env = os.environ.get("ASLFR_WEB_MODULES")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "node_modules"


def vendor_available() -> bool:
    root = node_modules()
    return all((root / pkg / src).exists() for pkg, src, _ in VENDOR)


def model_info(columns: list[str], charmap: CharacterMap, max_frames: int) -> dict:
    return {"format": "aslfr-web-model", "columns": list(columns),
            "character_to_prediction_index": charmap.to_mapping(), "max_frames": max_frames}


def write_site(out: Path, onnx_model: Path, info: dict) -> Path:
    """Write the static site into the folder `out` (which must not exist yet): the page, the
    module, the model and its model.json, and the vendor files."""
    root = node_modules()
    missing = [f"{pkg}/{src}" for pkg, src, _ in VENDOR if not (root / pkg / src).exists()]
    if missing:
        raise FileNotFoundError(f"{root / missing[0]}: missing; {INSTALL_HINT}")
    out.mkdir(parents=True)
    here = Path(__file__).parent / "web"
    for name in PAGE_FILES:
        shutil.copyfile(here / name, out / name)
    shutil.copyfile(onnx_model, out / "model.onnx")
    (out / MODEL_INFO).write_text(json.dumps(info, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    for pkg, src, dst in VENDOR:
        target = out / "vendor" / dst
        target.parent.mkdir(parents=True, exist_ok=True)
        if (root / pkg / src).is_dir():
            shutil.copytree(root / pkg / src, target)
        else:
            shutil.copyfile(root / pkg / src, target)
    return out


def site_summary(folder: Path) -> dict:
    """The files of a site folder and their bytes (export.json's `web`)."""
    sizes = [p.stat().st_size for p in folder.rglob("*") if p.is_file()]
    return {"files": len(sizes), "bytes": sum(sizes)}


def check_site(folder: Path) -> dict:
    """A folder `aslfr serve` can serve: the page, the module, a loadable model.onnx whose
    model.json matches it. Returns model.json; a bad folder or model is a ValueError naming it."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: not found (expected the web/ folder that 'aslfr export' writes)")
    for name in (*PAGE_FILES, "model.onnx", MODEL_INFO):
        if not (folder / name).is_file():
            raise ValueError(f"{folder}: no {name} in it; expected the web/ folder that 'aslfr export' writes")
    try:
        info = json.loads((folder / MODEL_INFO).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{folder / MODEL_INFO}: not valid JSON ({e})") from None
    if not isinstance(info, dict) or not isinstance(info.get("columns"), list):
        raise ValueError(f"{folder / MODEL_INFO}: no list of column names (\"columns\")")
    charmap = CharacterMap.from_mapping(info.get("character_to_prediction_index"),
                                        f"{folder / MODEL_INFO}: character_to_prediction_index")
    from aslfr.recognizer import ExportedModel

    model = ExportedModel(folder / "model.onnx")  # loads it, checks its input, reads its own map
    if info["columns"] != list(model.columns) or charmap != model.charmap:
        raise ValueError(f"{folder / MODEL_INFO}: its columns or character map are not those of the model.onnx "
                         f"beside it (a model.json of another export?)")
    return info


class SiteHandler(SimpleHTTPRequestHandler):
    """Static files with the headers that make the page cross-origin isolated (ONNX Runtime's
    wasm threads need SharedArrayBuffer), the right types for modules and wasm, no caching."""

    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript",
                      ".mjs": "text/javascript", ".wasm": "application/wasm", ".onnx": "application/octet-stream",
                      ".data": "application/octet-stream", ".binarypb": "application/octet-stream",
                      ".tflite": "application/octet-stream", ".json": "application/json"}

    def end_headers(self) -> None:
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        if os.environ.get("ASLFR_SERVE_LOG"):
            super().log_message(format, *args)


def make_server(folder: Path, port: int = 8000, host: str = "127.0.0.1", check: bool = True) -> ThreadingHTTPServer:
    """A server of `folder` (checked first with check_site unless `check` is False)."""
    if not (0 <= port <= 65535):
        raise ValueError(f"--port {port}: expected 0 (any free port) to 65535")
    if check:
        check_site(folder)
    try:
        server = ThreadingHTTPServer((host, port), partial(SiteHandler, directory=str(folder)))
    except OSError as e:
        raise ValueError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror or e})") from None
    server.daemon_threads = True
    return server


def serve(folder: Path, port: int = 8000, host: str = "127.0.0.1", out=sys.stdout) -> None:
    """Serve `folder` until Ctrl-C; prints the URL first."""
    server = make_server(Path(folder), port, host)
    print(f"serving {folder} at http://{host}:{server.server_address[1]}/ (Ctrl-C stops)", file=out, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        print("stopped", file=out, flush=True)
    finally:
        server.server_close()


__all__ = ["check_site", "make_server", "model_info", "serve", "site_summary", "vendor_available", "write_site"]
