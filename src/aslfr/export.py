"""`aslfr export`: a training checkpoint -> model.onnx, TFLite variants and a Kaggle submission.

ONNX comes from the torch exporter with the time axis dynamic. TFLite comes from onnx2tf, run in
a separate converter environment (onnx2tf pins its own TensorFlow and NumPy): `make tools`
creates it at `.tools/onnx2tf`; `ASLFR_CONVERTER_PYTHON` points at another one.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import subprocess
import tempfile
import time
import warnings
import zipfile
from pathlib import Path

import torch

from aslfr.files import atomic_write, write_json
from aslfr.inference import N_COLUMNS, build
from aslfr.landmarks import LANDMARK_COLUMNS, SELECTED_COLUMNS
from aslfr.vocab import CHARMAP_KEY, COMPETITION, CharacterMap

TFLITE_VARIANTS = ("float32", "float16", "int8")
MAX_EXPORT_FRAMES = 100_000
KAGGLE_SIZE_LIMIT = 40 * 1024 * 1024


class ExportError(RuntimeError):
    pass


def tool_python(env_var: str, name: str) -> Path:
    """The Python of a tool environment: `$env_var`, else `.tools/<name>` in the source checkout
    (where `make tools` / `make video` create them)."""
    env = os.environ.get(env_var)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2] / ".tools" / name / "bin" / "python"


def converter_python() -> Path:
    return tool_python("ASLFR_CONVERTER_PYTHON", "onnx2tf")


def export_onnx(module: torch.nn.Module, path: Path, width: int = N_COLUMNS, charmap: CharacterMap | None = None,
                optimize: bool = True) -> None:
    """`module` ([T, width] -> anything) to ONNX with T dynamic, input `inputs`, output `outputs`;
    with `charmap`, the model carries it as metadata (`character_to_prediction_index`, JSON)."""
    from torch.export import Dim

    example = torch.randn(32, width)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()), \
            warnings.catch_warnings(), _without_rewrites("SlicesSplit"):  # the exporter's chatter
        warnings.simplefilter("ignore")
        program = torch.onnx.export(module, (example,), dynamo=True, external_data=False, opset_version=18, optimize=optimize,
                                    input_names=["inputs"], output_names=["outputs"], verbose=False,
                                    dynamic_shapes={"inputs": {0: Dim("T", min=2, max=MAX_EXPORT_FRAMES)}})
    def write(tmp: Path) -> None:
        program.save(str(tmp))
        import onnx

        model = onnx.load(str(tmp))
        _unpin_gru_outputs(model)
        _fold_weight_unsqueezes(model)
        if charmap is not None:
            entry = model.metadata_props.add()
            entry.key, entry.value = CHARMAP_KEY, json.dumps(charmap.to_mapping(), ensure_ascii=False)
        onnx.save(model, str(tmp))
    atomic_write(path, write)


@contextlib.contextmanager
def _without_rewrites(*names: str):
    """The exporter's optimizer without the named rewrite rules. SlicesSplit (two Slices of one
    tensor -> one Split) is the one rule that matches several output nodes, which its matcher
    does by pairing every node with every other: quadratic in the graph, it took most of an
    export of the unrolled joint decoder (over 20 minutes for 64 steps), and nothing here
    needs it."""
    try:
        from onnxscript import rewriter
    except ImportError:  # another exporter: nothing to leave out
        yield
        return
    rules = getattr(rewriter, "_DEFAULT_REWRITE_RULES", None)
    if rules is None:
        yield
        return
    rewriter._DEFAULT_REWRITE_RULES = type(rules)(r for r in rules if getattr(r, "name", None) not in names)
    try:
        yield
    finally:
        rewriter._DEFAULT_REWRITE_RULES = rules


def _fold_weight_unsqueezes(model) -> None:
    """Unsqueezes of initializers (the depthwise convs' [C, 1, k] weights made [C, 1, 1, k]) become
    initializers themselves (in place). The exporter's optimizer leaves them to run; onnx2tf
    folds them only when its simplifier succeeds, and on the full 2nd-place network's attention
    and joint graphs the simplifier fails (a broadcast in its own trial run), after which its
    Conv could not lay out a weight that is not a constant."""
    import numpy as np
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    kept = []
    for node in model.graph.node:
        if node.op_type == "Unsqueeze" and len(node.input) == 2 and all(i in inits for i in node.input):
            value = numpy_helper.to_array(inits[node.input[0]])
            axes = numpy_helper.to_array(inits[node.input[1]]).reshape(-1)
            rank = value.ndim + len(axes)
            folded = np.expand_dims(value, tuple(int(a) % rank for a in axes))
            model.graph.initializer.append(numpy_helper.from_array(folded, node.output[0]))
        else:
            kept.append(node)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    used = {name for node in model.graph.node for name in node.input} | {o.name for o in model.graph.output}
    unused = [i for i in model.graph.initializer if i.name not in used]
    for init in unused:  # the weights now folded, not kept twice
        model.graph.initializer.remove(init)


def _unpin_gru_outputs(model) -> None:
    """The exporter gives a GRU's output the example's static length, and the optimizer then
    writes it into the Reshape that drops the GRU's direction axis ([33, 1, 96] for a 32-frame
    example): that Reshape's time dimension becomes -1 again (in place)."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    readers: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            readers.setdefault(name, []).append(node)
    for gru in (n for n in model.graph.node if n.op_type == "GRU"):
        nodes = list(readers.get(gru.output[0], []))
        nodes += [r for n in nodes if n.op_type == "Transpose" for r in readers.get(n.output[0], [])]
        for node in nodes:
            if node.op_type == "Reshape" and node.input[1] in inits:
                shape = numpy_helper.to_array(inits[node.input[1]]).copy()
                if len(shape) == 3 and shape[0] > 0 and -1 not in shape:
                    shape[0] = -1
                    name = f"{node.input[1]}_dynamic_time"
                    model.graph.initializer.append(numpy_helper.from_array(shape, name))
                    node.input[1] = name


def convert_tflite(onnx_path: Path, out_dir: Path) -> dict[str, Path]:
    python = converter_python()
    if not python.is_file():
        raise ExportError(f"TFLite converter environment not found at {python}; create it with 'make tools' "
                          "(or set ASLFR_CONVERTER_PYTHON to a Python with onnx2tf and tensorflow)")
    script = Path(__file__).parent / "tools" / "tflite_convert.py"
    run = subprocess.run([str(python), str(script), str(onnx_path), str(out_dir)], capture_output=True, text=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES=""))
    if run.returncode != 0:
        raise ExportError(f"TFLite conversion of {onnx_path} failed:\n{run.stderr[-3000:]}")
    return {v: out_dir / f"model_{v}.tflite" for v in TFLITE_VARIANTS}


def write_submission(tflite: Path, out: Path, charmap: CharacterMap = COMPETITION,
                     columns: list[str] = SELECTED_COLUMNS) -> Path:
    """submission.zip: model.tflite and inference_args.json (Kaggle's `selected_columns`; a model
    with another character map also carries it there, under `character_to_prediction_index`)."""
    args: dict = {"selected_columns": list(columns)}
    if not charmap.is_competition:
        args[CHARMAP_KEY] = charmap.to_mapping()
    write_json(out / "inference_args.json", args)
    zpath = out / "submission.zip"

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as z:
            z.write(tflite, "model.tflite")
            z.writestr("inference_args.json", json.dumps(args, ensure_ascii=False))
    atomic_write(zpath, write)
    return zpath


#: what an export writes into its folder (export.json last), and its site folder for the browser
EXPORT_FILES = ("model.onnx", *(f"model_{v}.tflite" for v in TFLITE_VARIANTS), "model.tflite",
                "inference_args.json", "submission.zip")
WEB_DIR = "web"


#: the seed's on-device model resizes longer inputs to this many frames unless told otherwise
SEED_EXPORT_FRAMES = 320


def build_module(checkpoints: list[Path], max_frames: int | None, stats: str | Path | None,
                 decoding: str | None, ctc_weight: float | None, max_tokens: int | None):
    """(the on-device module, its Config, its input columns, what export.json records) for one
    seed checkpoint, or one or more of the 2nd place's family decoded together."""
    from aslfr.checkpoints import load_model

    cfg = load_model(checkpoints[0])[1]
    if cfg.network == "ctc-attention":
        from aslfr import joint_inference
        from aslfr.ctc_attention import MAX_TOKENS

        module, cfg = joint_inference.build(checkpoints, decoding or "joint", 0.2 if ctc_weight is None else ctc_weight,
                                            max_frames, max_tokens or MAX_TOKENS)
        info = {"checkpoints": module.sources, "decoding": module.decoding, "max_tokens": module.max_tokens}
        if module.decoding == "joint":
            info["ctc_weight"] = module.ctc_weight
        return module, cfg, LANDMARK_COLUMNS, info
    given = [name for name, value in (("--decoding", decoding), ("--ctc-weight", ctc_weight),
                                      ("--max-tokens", max_tokens)) if value is not None]
    if len(checkpoints) > 1 or given:
        what = "more than one --checkpoint" if len(checkpoints) > 1 else ", ".join(given)
        raise ExportError(f"{checkpoints[0]}: holds the seed's network (CTC greedy, one model): {what} applies to "
                          f"the 2nd place's family only")
    module, cfg = build(checkpoints[0], stats, max_frames=max_frames or SEED_EXPORT_FRAMES)
    return module, cfg, SELECTED_COLUMNS, {"checkpoint": str(module.model.source)}


def export(checkpoint: str | Path | list, out: str | Path, max_frames: int | None = None, fp16: bool = False,
           tflite: bool = True, stats: str | Path | None = None, web: bool = True, decoding: str | None = None,
           ctc_weight: float | None = None, max_tokens: int | None = None, log=print) -> dict:
    """Write model.onnx, model_{float32,float16,int8}.tflite, model.tflite (the submitted variant),
    inference_args.json, submission.zip and web/ (the browser's site folder, aslfr.web); returns
    the files and their sizes. `checkpoint`: one, or for the 2nd place's family a list decoded
    together (averaged per step) with `decoding` (ctc, attention or joint, the default) and
    `ctc_weight` (joint; 0.2); `max_frames`: the seed resizes longer inputs to it (default 320),
    the 2nd place keeps the first max_frames (default its training length).

    Everything is built in a hidden folder inside `out` and moved into place only when all of it
    is written, with `export.json` last; files of an earlier export that this one does not write
    (its TFLite files and submission.zip after `--onnx-only`) are removed, so `out` never mixes two
    models and `export.json` lists exactly what is there."""
    if max_frames is not None and not (isinstance(max_frames, int) and 1 <= max_frames <= MAX_EXPORT_FRAMES):
        raise ExportError(f"--max-frames {max_frames}: expected a whole number of frames from 1 to {MAX_EXPORT_FRAMES}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoints = [Path(c) for c in (checkpoint if isinstance(checkpoint, (list, tuple)) else [checkpoint])]
    try:
        module, cfg, columns, info = build_module(checkpoints, max_frames, stats, decoding, ctc_weight, max_tokens)
    except ValueError as e:
        raise ExportError(str(e)) from None
    result: dict = {**info, "max_frames": module.max_frames, "columns": len(columns), "files": {}}
    stage = Path(tempfile.mkdtemp(prefix=".export-", dir=out))
    try:
        t0 = time.time()
        export_onnx(module, stage / "model.onnx", width=len(columns), charmap=cfg.charmap)
        log(f"wrote {out / 'model.onnx'} in {time.time() - t0:.1f} s")
        if web:
            from aslfr import web as site

            if site.vendor_available():
                site.write_site(stage / WEB_DIR, stage / "model.onnx",
                                site.model_info(columns, cfg.charmap, module.max_frames))
                result["web"] = site.site_summary(stage / WEB_DIR)
                log(f"wrote {out / WEB_DIR}/ (the browser's page and model: aslfr serve {out / WEB_DIR})")
            else:
                log(f"warning: {out / WEB_DIR}/ not written: {site.INSTALL_HINT}")
        if tflite:
            t0 = time.time()
            variants = convert_tflite(stage / "model.onnx", stage)
            log(f"wrote TFLite {', '.join(TFLITE_VARIANTS)} in {time.time() - t0:.1f} s")
            chosen = variants["float16" if fp16 else "float32"]
            shutil.copyfile(chosen, stage / "model.tflite")
            result["submitted_variant"] = "float16" if fp16 else "float32"
            write_submission(stage / "model.tflite", stage, cfg.charmap, columns)
            size = (stage / "model.tflite").stat().st_size
            if size > KAGGLE_SIZE_LIMIT:
                log(f"warning: model.tflite is {size / 2**20:.1f} MiB, over Kaggle's 40 MB limit; export with --fp16")
        written = [name for name in EXPORT_FILES if (stage / name).is_file()]
        if (stage / WEB_DIR).is_dir():
            written.append(WEB_DIR)
        for name in written:
            if name.endswith((".onnx", ".tflite", ".zip")):
                result["files"][name] = (stage / name).stat().st_size
        _publish(stage, out, written)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    write_json(out / "export.json", result)
    return result


def _publish(stage: Path, out: Path, written: list[str]) -> None:
    """Move the staged files into `out` and remove an earlier export's files that are not among
    them; export.json goes first, so that a failure part-way leaves no export.json describing
    another model's files."""
    try:
        (out / "export.json").unlink(missing_ok=True)
        for name in EXPORT_FILES:
            if name not in written:
                (out / name).unlink(missing_ok=True)
        if (out / WEB_DIR).is_dir():  # an earlier export's site: replaced whole, or removed
            old = out / f".{WEB_DIR}.old-{os.getpid()}"
            os.replace(out / WEB_DIR, old)
            shutil.rmtree(old, ignore_errors=True)
        for name in written:
            target = out / name
            try:
                os.replace(stage / name, target)
            except OSError as e:
                raise ExportError(f"{target}: cannot be written ({e.strerror or e})") from None
    except OSError as e:
        raise ExportError(f"{e.filename or out}: cannot be replaced ({e.strerror or e})") from None


def main_sizes(result: dict) -> str:
    return ", ".join(f"{k} {v / 2**20:.2f} MiB" for k, v in result["files"].items())

