"""The `aslfr` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _synth(a: argparse.Namespace) -> None:
    from aslfr.data.synthetic import synthesize

    counts = synthesize(a.out_dir, sequences=a.sequences, participants=a.participants, files=a.files,
                        seed=a.seed, corrupt_fraction=a.corrupt_fraction, supplemental=a.supplemental,
                        workers=a.workers)
    print(f"wrote {counts['sequences']} train sequences ({counts['corrupt']} planted corrupt) and "
          f"{counts['supplemental']} supplemental in {counts['files']} files to {a.out_dir}")


def _prepare(a: argparse.Namespace) -> None:
    from aslfr.data.prepare import describe, prepare

    print(describe(prepare(a.data_dir, a.out_dir, supplemental=a.supplemental, workers=a.workers)))


def _info(a: argparse.Namespace) -> None:
    from aslfr.config import preset
    from aslfr.model import FingerspellingModel, count_parameters, flops_per_sequence

    cfg = preset(a.preset).override(a.set)
    model = FingerspellingModel(cfg)
    print(f"preset {a.preset}: {count_parameters(model):,} trainable parameters, "
          f"{flops_per_sequence(cfg, cfg.max_len) / 1e9:.2f} GFLOPs forward at T={cfg.max_len}")
    for k, v in cfg.to_dict().items():
        print(f"  {k} = {v}")


def _train(a: argparse.Namespace) -> None:
    from aslfr.config import preset
    from aslfr.train import train

    cfg = preset(a.preset).override(a.set)
    if a.min_score is not None:
        cfg = cfg.override([f"min_score={a.min_score}"])
    if a.scores is not None:
        cfg = cfg.override(["train_filter=score"])
    row = train(cfg, a.data, a.out, resume=a.resume, scores=a.scores)
    if row:
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aslfr", description="Fingerspelling recognition from MediaPipe landmarks.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic dataset in the Kaggle layout")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--sequences", type=int, default=1000)
    p.add_argument("--participants", type=int, default=10)
    p.add_argument("--files", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--corrupt-fraction", type=float, default=0.05)
    p.add_argument("--supplemental", type=int, default=0, metavar="M", help="also write M supplemental sequences")
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=_synth)

    p = sub.add_parser("prepare", help="Kaggle layout or seed TFRecords -> shards, metadata, stats")
    p.add_argument("data_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--supplemental", action="store_true", help="also prepare the supplemental data")
    p.add_argument("--workers", type=int, default=1)
    p.set_defaults(func=_prepare)

    p = sub.add_parser("info", help="a preset's parameter count and settings")
    p.add_argument("--preset", default="seed-base")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_info)

    p = sub.add_parser("train", help="train a model on prepared data (torchrun for many processes)")
    p.add_argument("--preset", required=True)
    p.add_argument("--data", required=True, type=Path, help="a directory written by 'aslfr prepare'")
    p.add_argument("--out", required=True, type=Path, help="run directory")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a preset value")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR/checkpoints/last.pt")
    p.add_argument("--scores", type=Path, help="per-sample scores (aslfr score) for the score filter")
    p.add_argument("--min-score", type=float, help="keep samples whose score is above this")
    p.set_defaults(func=_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    from aslfr.data.kaggle import DataError
    from aslfr.train import TrainingError

    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (DataError, TrainingError, FileNotFoundError, ValueError) as e:
        print(f"aslfr {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"aslfr {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
