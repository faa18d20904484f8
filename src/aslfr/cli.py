"""The `aslfr` command line."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path


def _synth(a: argparse.Namespace) -> None:
    from aslfr.data.synthetic import synthesize

    from aslfr.vocab import CharacterMap

    counts = synthesize(a.out_dir, sequences=a.sequences, participants=a.participants, files=a.files,
                        seed=a.seed, corrupt_fraction=a.corrupt_fraction, supplemental=a.supplemental,
                        workers=a.workers, characters=CharacterMap.load(a.characters) if a.characters else None)
    print(f"wrote {counts['sequences']} train sequences ({counts['corrupt']} planted corrupt) and "
          f"{counts['supplemental']} supplemental in {counts['files']} files to {a.out_dir}")


def _prepare(a: argparse.Namespace) -> None:
    from aslfr.data.prepare import describe, prepare

    from aslfr.data.kaggle import dataset_charmap
    from aslfr.vocab import CharacterMap

    charmap = CharacterMap.load(a.characters) if a.characters else dataset_charmap(a.data_dir)
    print(describe(prepare(a.data_dir, a.out_dir, supplemental=a.supplemental, workers=a.workers,
                           characters=charmap, landmarks=a.landmarks)))


def _serve(a: argparse.Namespace) -> None:
    from aslfr.web import serve

    a.ctrl_c_stops = True  # Ctrl-C is how a server is stopped: a clean end, not an interruption
    serve(a.folder, a.port, a.host)


def _info(a: argparse.Namespace) -> None:
    from aslfr.config import preset
    from aslfr.model import FingerspellingModel, count_parameters, flops_per_sequence

    cfg = preset(a.preset).override(a.set).check()
    if cfg.network == "ctc-attention":
        from aslfr.ctc_attention import count_parameters as counts
        from aslfr.joint_training import build_model

        total, trainable = counts(build_model(cfg))
        print(f"preset {a.preset}: {total:,} parameters, {trainable:,} trainable "
              f"(the 2nd place's network family: encoder, GRU CTC head, attention decoder)")
    else:
        model = FingerspellingModel(cfg)
        print(f"preset {a.preset}: {count_parameters(model):,} trainable parameters, "
              f"{flops_per_sequence(cfg, cfg.max_len) / 1e9:.2f} GFLOPs forward at T={cfg.max_len}")
    for k, v in cfg.to_dict().items():
        print(f"  {k} = {v}")


def _train(a: argparse.Namespace) -> None:
    from aslfr.config import preset
    from aslfr.train import train

    cfg = preset(a.preset).override(a.set)
    from aslfr.data.shards import prepared_charmap
    from aslfr.vocab import CharacterMap

    # the output alphabet: --characters, else the one the data was prepared with
    cfg = cfg.with_charmap(CharacterMap.load(a.characters) if a.characters else prepared_charmap(a.data))
    if a.min_score is not None:
        cfg = cfg.override([f"min_score={a.min_score}"])
    if a.scores is not None:
        cfg = cfg.override(["train_filter=score"])
    row = train(cfg, a.data, a.out, resume=a.resume, scores=a.scores)
    if row:
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


def _score(a: argparse.Namespace) -> None:
    from aslfr.score import histogram_path, score

    r = score(a.checkpoint, a.data, a.out, batch_size=a.batch_size, bf16=a.bf16)
    print(f"scored {r['sequences']} sequences in {r['precision']} (mean score {r['mean_score']:.4f}) -> {a.out}, "
          f"histogram {histogram_path(a.out)}")


def _pipeline(a: argparse.Namespace) -> None:
    from aslfr.pipeline import Pipeline, PipelineSettings

    settings = PipelineSettings(data=a.data, out=a.out, preset=a.preset, folds=a.folds, min_score=a.min_score,
                                overrides=a.set, workers=a.workers, export=not a.no_export, jobs=a.jobs)
    summary = Pipeline(settings).run(a.from_stage, a.to_stage)
    if summary:
        print(format_summary(summary))
        print(f"report: {a.out / 'report.md'}")


def _import_keras(a: argparse.Namespace) -> None:
    from aslfr.keras_import import import_keras

    r = import_keras(a.weights, a.out, preset_name=a.preset, stats=tuple(a.stats) if a.stats else None)
    cfg = r["config"]
    if r.get("network") == "ctc-attention":
        print(f"read {a.weights}: the 2nd place's network, width {cfg.dim}, layers {cfg.layers}, kernel "
              f"{cfg.kernel_sizes[0]}, {r['parameters']:,} trainable parameters")
    else:
        print(f"read {a.weights}: width {cfg.dim}, {cfg.stages} stages, kernels {list(cfg.kernel_sizes)}, "
              f"expansion {cfg.expand}, {r['parameters']:,} parameters, late-dropout step {r['late_dropout_step']}")
    for key, (got, want) in r["differs"].items():
        print(f"  {key} = {got} read from the file (preset {r['preset']} has {want})")
    print(f"wrote {a.out} (preset {r['preset']}, {cfg.heads} heads)"
          + ("" if r["stats"] else "; it holds no normalisation statistics: pass --stats MEANS STDS, or "
             "'export --stats stats.npz' later"))


def _export(a: argparse.Namespace) -> None:
    from aslfr.export import export, main_sizes

    result = export(a.checkpoint, a.out, max_frames=a.max_frames, fp16=a.fp16, tflite=not a.onnx_only, stats=a.stats,
                    web=not a.no_web, decoding=a.decoding, ctc_weight=a.ctc_weight, max_tokens=a.max_tokens)
    print(f"exported to {a.out}: {main_sizes(result)}")


def _evaluate(a: argparse.Namespace) -> None:
    from aslfr.evaluate import evaluate_in_runtime, format_result

    for runtime in a.runtime or ["litert"]:
        print(format_result(evaluate_in_runtime(a.submission, a.data, a.limit, runtime)), flush=True)


def _landmarks(a: argparse.Namespace) -> None:
    from aslfr.sources import extract_landmarks

    if a.video.is_dir():
        from aslfr.recordings import build_dataset
        from aslfr.vocab import CharacterMap

        if a.phrases is None:
            raise ValueError(f"{a.video}: a directory of recordings needs --phrases phrases.csv (file, phrase, participant)")
        r = build_dataset(a.video, a.phrases, a.out, workers=a.workers,
                          characters=CharacterMap.load(a.characters) if a.characters else None)
        print(f"wrote {r['written']} of {r['recordings']} recordings to {a.out} ({r['characters']} characters); "
              f"{r['failed']} failed" + (f", listed in {a.out / 'failures.csv'}" if r["failed"] else ""))
        for file, why in list(r["failures"].items())[:10]:
            print(f"  {file}: {why}")
        return
    out = extract_landmarks(a.video, a.out, sequence_id=a.sequence_id)
    print(f"wrote {out}")


def _transcribe(a: argparse.Namespace) -> None:
    import json

    from aslfr.recognizer import transcribe

    results = transcribe(a.input, a.model, a.sequence_id, progress=not a.json)
    if a.json:
        print(json.dumps(results, indent=2))
    else:
        for r in results:
            print(f"{r['sequence_id']}\t{r['text']}")


def _live(a: argparse.Namespace) -> None:
    import json

    from aslfr.live import format_figures, live

    r = live(a.model, a.input, camera=a.camera, sequence_id=a.sequence_id, every_ms=a.every_ms, gap_ms=a.gap_ms,
             realtime=a.realtime, fps=a.fps, limit=a.limit)
    print(json.dumps(r, indent=2) if a.json else format_figures(r["figures"]))


def _show(a: argparse.Namespace) -> None:
    from aslfr.video import show

    r = show(a.data, a.sequence_id, a.out, model=a.model, fps=a.fps, every=a.every)
    pred = f", prediction {r['prediction']!r}" if r["prediction"] is not None else ""
    print(f"wrote {r['out']}: {r['frames']} frames of {r['phrase']!r}{pred}")


def format_summary(s: dict) -> str:
    lines = ["counts: " + ", ".join(f"{k}={v}" for k, v in s["counts"].items())]
    for name, v in s["validation_scores"].items():
        lines.append(f"{name}: " + ", ".join(f"{k}={x:.4f}" for k, x in v.items()))
    for name, d in s["filters"].items():
        per = ", ".join(f"{k} recall {v['recall']:.2f} precision {v['precision']:.2f}" for k, v in d["kinds"].items())
        lines.append(f"filter {name}: dropped {d['dropped']}" + (f"; {per}" if per else ""))
    lines.append("stage seconds: " + ", ".join(f"{k}={v}" for k, v in s["stage_seconds"].items() if v is not None))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    from aslfr.config import PRESETS

    parser = argparse.ArgumentParser(prog="aslfr", description="Fingerspelling recognition from MediaPipe landmarks.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic dataset in the Kaggle layout")
    p.add_argument("out_dir", type=Path, help="directory to write the Kaggle-layout dataset into")
    p.add_argument("--sequences", type=int, default=1000, help="training sequences (default 1000)")
    p.add_argument("--participants", type=int, default=10, help="signers (default 10)")
    p.add_argument("--files", type=int, default=1, help="landmark parquet files to spread them over (default 1)")
    p.add_argument("--seed", type=int, default=0, help="the same seed writes the same files (default 0)")
    p.add_argument("--corrupt-fraction", type=float, default=0.05,
                   help="share of planted corrupt samples, no_hand and wrong_phrase (default 0.05)")
    p.add_argument("--supplemental", type=int, default=0, metavar="M", help="also write M supplemental sequences")
    p.add_argument("--workers", type=int, default=1, help="processes writing files in parallel (default 1)")
    p.add_argument("--characters", type=Path, metavar="MAP.json",
                   help="an alphabet in the Kaggle map's format: phrases and hand shapes of its characters")
    p.set_defaults(func=_synth)

    p = sub.add_parser("prepare", help="Kaggle layout or seed TFRecords -> shards, metadata, stats")
    p.add_argument("data_dir", type=Path, help="a Kaggle-layout directory (train.csv, train_landmarks/) or the "
                                               "seed's TFRecord files")
    p.add_argument("out_dir", type=Path, help="the prepared directory to write (a rerun continues it)")
    p.add_argument("--supplemental", action="store_true", help="also prepare the supplemental data")
    p.add_argument("--landmarks", choices=["seed", "all"], default="seed",
                   help="seed: the seed's 100 landmarks, x and y (default); all: also every landmark's x, y "
                        "and z, for the second-place presets")
    p.add_argument("--workers", type=int, default=1, help="files prepared in parallel (default 1)")
    p.add_argument("--characters", type=Path, metavar="MAP.json",
                   help="character map in the Kaggle file's format (default: DATA_DIR's "
                        "character_to_prediction_index.json, else the competition's 59 characters)")
    p.set_defaults(func=_prepare)

    p = sub.add_parser("info", help="a preset's parameter count and settings")
    p.add_argument("--preset", default="seed-base", choices=list(PRESETS), help="default seed-base")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset value (repeatable)")
    p.set_defaults(func=_info)

    p = sub.add_parser("train", help="train a model on prepared data (torchrun for many processes)")
    p.add_argument("--preset", required=True, choices=list(PRESETS), help="the settings to start from (see aslfr info)")
    p.add_argument("--data", required=True, type=Path, help="a directory written by 'aslfr prepare'")
    p.add_argument("--out", required=True, type=Path,
                   help="run directory; a rerun of the same job continues it, another job is refused")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset value")
    p.add_argument("--resume", action="store_true",
                   help="say so when there is nothing to continue (a rerun continues by itself)")
    p.add_argument("--scores", type=Path, help="per-sample scores (aslfr score) for the score filter")
    p.add_argument("--min-score", type=float, help="keep samples whose score is above this")
    p.add_argument("--characters", type=Path, metavar="MAP.json",
                   help="the model's character map (default: the one the data was prepared with)")
    p.set_defaults(func=_train)

    p = sub.add_parser("score", help="score every prepared sequence with a checkpoint (SEED-SPEC 7.2)")
    p.add_argument("--checkpoint", required=True, type=Path, help="a checkpoint (training or import-keras)")
    p.add_argument("--data", required=True, type=Path, help="a directory written by 'aslfr prepare'")
    p.add_argument("--out", required=True, type=Path, help="scores.parquet to write")
    p.add_argument("--batch-size", type=int, default=64, help="sequences per forward pass (default 64)")
    p.add_argument("--bf16", choices=["true", "false", "auto"], default=None,
                   help="bf16 autocast for the predictions (default: the checkpoint's own bf16 setting; auto: where "
                        "the hardware has native bf16)")
    p.set_defaults(func=_score)

    p = sub.add_parser("import-keras", help="the seed's or the 2nd place's Keras 2 weights (.h5) -> an aslfr checkpoint")
    p.add_argument("weights", type=Path, help="a Keras 2 model.save_weights .h5 of the seed's or the 2nd place's network")
    p.add_argument("--out", required=True, type=Path, help="checkpoint to write (.pt)")
    p.add_argument("--preset", choices=["seed-base", "seed-final", "second-place"],
                   help="the settings the file lacks (heads, max_len, dropout); default: by stage count for the "
                        "seed's, second-place for the 2nd place's")
    p.add_argument("--stats", nargs=2, type=Path, metavar=("MEANS", "STDS"),
                   help="the seed's MEANs.p and STDs.p (600 feature means and standard deviations)")
    p.set_defaults(func=_import_keras)

    p = sub.add_parser("export", help="checkpoint -> model.onnx, TFLite variants, submission.zip")
    p.add_argument("--checkpoint", required=True, type=Path, action="append",
                   help="a checkpoint (training or import-keras); the 2nd place's family: repeat it to decode "
                        "several models together, averaged per step")
    p.add_argument("--out", required=True, type=Path, help="directory for model.onnx, the TFLite files and submission.zip")
    p.add_argument("--max-frames", type=int, default=None,
                   help="the seed: resize longer inputs to this many frames (default 320); the 2nd place's family: "
                        "keep the first this many (default its training length)")
    p.add_argument("--decoding", choices=("ctc", "attention", "joint"),
                   help="the 2nd place's family: the decoder inside the model (default joint)")
    p.add_argument("--ctc-weight", type=float, help="joint decoding: the CTC prefix score's weight (default 0.2)")
    p.add_argument("--max-tokens", type=int, help="attention and joint decoding: the steps' cap (default 64, the "
                                                  "decoder's positions)")
    p.add_argument("--fp16", action="store_true", help="submit the float16-weight TFLite (needed over 40 MB)")
    p.add_argument("--onnx-only", action="store_true", help="write model.onnx only (no converter environment)")
    p.add_argument("--stats", type=Path, help="stats.npz, for a checkpoint that does not carry its statistics")
    p.add_argument("--no-web", action="store_true", help="do not write web/ (the browser's page and model)")
    p.set_defaults(func=_export)

    p = sub.add_parser("serve", help="serve an export's web/ folder on localhost (the page runs the model in the browser)")
    p.add_argument("folder", type=Path, help="the web/ folder that 'aslfr export' writes")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000; 0: any free port)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1, this machine only)")
    p.set_defaults(func=_serve)

    p = sub.add_parser("evaluate", help="run a submission.zip the way Kaggle's evaluator does")
    p.add_argument("--submission", required=True, type=Path, help="a submission.zip (model.tflite + inference_args.json)")
    p.add_argument("--data", required=True, type=Path, help="Kaggle-layout data directory")
    p.add_argument("--limit", type=int, help="evaluate the first N sequences of train.csv")
    p.add_argument("--runtime", action="append", choices=["litert", "tflite-runtime"],
                   help="ai-edge-litert (default) and/or tflite-runtime 2.14.0 (converter environment); repeatable")
    p.set_defaults(func=_evaluate, runtime=None)

    p = sub.add_parser("landmarks", help="MediaPipe Holistic over a video -> a Kaggle-layout parquet or a .pose "
                                         "file; over a directory of recordings -> a dataset")
    p.add_argument("video", type=Path, help="a video file or an image; or a directory of videos and .pose files")
    p.add_argument("--out", required=True, type=Path,
                   help="the parquet or .pose file to write; for a directory, the dataset directory")
    p.add_argument("--sequence-id", type=int, default=0, help="the sequence_id to write (default 0)")
    p.add_argument("--phrases", type=Path, help="for a directory: phrases.csv with file, phrase, participant")
    p.add_argument("--workers", type=int, default=1, help="for a directory: recordings extracted in parallel")
    p.add_argument("--characters", type=Path, metavar="MAP.json",
                   help="for a directory: the character map (default: every character the phrases use)")
    p.set_defaults(func=_landmarks)

    p = sub.add_parser("transcribe", help="video, parquet or directory -> text, with an exported model")
    p.add_argument("input", type=Path, help="a video, a Kaggle-layout parquet or a directory of them")
    p.add_argument("--model", required=True, type=Path, help="submission.zip or model.onnx")
    p.add_argument("--sequence-id", type=int, help="only this sequence of a parquet")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.set_defaults(func=_transcribe)

    from aslfr.recognizer import DEFAULT_EVERY_MS, DEFAULT_GAP_MS
    p = sub.add_parser("live", help="a camera, video or landmark parquet -> text as the hand moves")
    p.add_argument("input", type=Path, nargs="?", help="a video, or a Kaggle-layout parquet of landmarks")
    p.add_argument("--camera", type=int, metavar="N", help="read camera N (OpenCV) instead of a file")
    p.add_argument("--model", required=True, type=Path, help="submission.zip or model.onnx")
    p.add_argument("--sequence-id", type=int, help="only this sequence of a parquet")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N sequences of a parquet")
    p.add_argument("--every-ms", type=float, default=DEFAULT_EVERY_MS,
                   help=f"re-decode the open phrase this often, in stream time (default {DEFAULT_EVERY_MS})")
    p.add_argument("--gap-ms", type=float, default=DEFAULT_GAP_MS,
                   help=f"a phrase ends after this long without a hand (default {DEFAULT_GAP_MS})")
    p.add_argument("--realtime", action="store_true", help="pace a file at its own frame rate, as a camera")
    p.add_argument("--fps", type=float, default=30.0, help="frame rate of a landmark parquet (default 30)")
    p.add_argument("--json", action="store_true", help="print the phrases and figures as JSON")
    p.set_defaults(func=_live)

    p = sub.add_parser("show", help="draw a sequence to a GIF or MP4, optionally with a model's prediction")
    p.add_argument("--data", required=True, type=Path,
                   help="Kaggle-layout data directory, or one recording: a .pose file or a parquet")
    p.add_argument("--sequence-id", type=int, help="the sequence to draw (needed for a data directory)")
    p.add_argument("--out", required=True, type=Path, help="clip.gif or clip.mp4")
    p.add_argument("--model", type=Path, help="submission.zip or model.onnx")
    p.add_argument("--fps", type=int, default=15, help="frames per second of the clip (default 15)")
    p.add_argument("--every", type=int, default=1, help="draw every N-th frame")
    p.set_defaults(func=_show)

    from aslfr.pipeline import PIPELINE_PRESETS, STAGES
    p = sub.add_parser("pipeline", help="prepare, base, score, final, control, export, evaluate, report")
    p.add_argument("--data", required=True, type=Path, help="Kaggle-layout data directory")
    p.add_argument("--out", required=True, type=Path, help="run directory")
    p.add_argument("--preset", default="demo", choices=list(PIPELINE_PRESETS), help="demo: demo-base and demo-final; seed: seed-base and seed-final")
    p.add_argument("--folds", type=int, default=0, help="K > 1: out-of-fold scoring with K participant folds")
    p.add_argument("--min-score", type=float, help="score filter threshold (default: the preset's, 0.2)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override both models' settings")
    p.add_argument("--from", dest="from_stage", choices=STAGES, help="rerun from this stage")
    p.add_argument("--to", dest="to_stage", choices=STAGES, help="stop after this stage")
    p.add_argument("--workers", type=int, default=2, help="prepare workers")
    p.add_argument("--no-export", action="store_true", help="skip the export and evaluate stages")
    p.add_argument("--jobs", type=int, default=1,
                   help="2: train the control model in a second process alongside base, score and final "
                        "(one thread each; faster on a small CPU)")
    p.set_defaults(func=_pipeline)
    parser.subcommands = sub.choices  # each subcommand's parser, for its own usage line
    return parser


def _end_progress_bars() -> None:
    """Close the progress bars an error left open, so that its line starts a line of its own."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


class _InterruptWatch:
    """Notes every Ctrl-C while a command runs (and raises it as usual), so that one caught and
    dropped by a library on the way cannot let the command end with exit status 0."""

    def __init__(self) -> None:
        self.seen = False
        self._previous = None

    def _on_interrupt(self, signum, frame) -> None:  # noqa: ANN001 - signal's handler signature
        self.seen = True
        raise KeyboardInterrupt

    def __enter__(self) -> "_InterruptWatch":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._on_interrupt)
        return self

    def __exit__(self, *exc) -> None:  # noqa: ANN002
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def main(argv: list[str] | None = None) -> int:
    from aslfr.data.kaggle import DataError
    from aslfr.export import ExportError
    from aslfr.checkpoints import TrainingError
    from aslfr.sources import MissingExtra

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # the subcommand's own usage, not the top level's
        parser.subcommands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    interrupted = _InterruptWatch()
    try:
        with interrupted:
            args.func(args)
        if interrupted.seen and not getattr(args, "ctrl_c_stops", False):
            raise KeyboardInterrupt  # a Ctrl-C that something on the way caught and let pass: still a stop
    except (DataError, TrainingError, ExportError, MissingExtra, FileNotFoundError, ValueError) as e:
        _end_progress_bars()
        print(f"aslfr {args.command}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # an output that cannot be written, a disk that is full: the path and why
        _end_progress_bars()
        where = f"{e.filename}: " if e.filename else ""
        print(f"aslfr {args.command}: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _end_progress_bars()
        print(f"aslfr {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


#: the commands that train or run the network on many samples: they run with a caching allocator
HEAVY = ("train", "score", "pipeline")


def entry() -> int:
    """The `aslfr` program: `main`, restarted first with a caching memory allocator for the heavy
    commands (aslfr.memory)."""
    argv = sys.argv[1:]
    if argv and argv[0] in HEAVY:
        from aslfr.memory import restart_with_allocator

        try:
            restart_with_allocator(["-m", "aslfr", *argv])
        except ValueError as e:
            print(f"aslfr {argv[0]}: error: {e}", file=sys.stderr)
            return 2
    return main(argv)


if __name__ == "__main__":
    sys.exit(entry())
