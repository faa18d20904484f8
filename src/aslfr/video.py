"""Pictures of the data: `show` draws a sequence frame by frame to a GIF or MP4, with the true
phrase and, given a model, the prediction growing as the frames arrive. Its landmarks come from
`aslfr.sources`; the predictions from `aslfr.recognizer`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from aslfr.data.kaggle import DataError
from aslfr.files import check_output_file
from aslfr.features import rows_to_coords
from aslfr.landmarks import SELECTED_COLUMNS
from aslfr.sources import sequences_of


# --------------------------------------------------------------------------------------------
# Pictures
# --------------------------------------------------------------------------------------------

HAND_EDGES = [(0, 1), (1, 2), (2, 3), (3, 4), (0, 5), (5, 6), (6, 7), (7, 8), (5, 9), (9, 10), (10, 11),
              (11, 12), (9, 13), (13, 14), (14, 15), (15, 16), (13, 17), (17, 18), (18, 19), (19, 20), (0, 17)]
# within the 14 selected pose points: 0-6 are left 11,13,15,17,19,21,23; 7-13 right 12,...,24
POSE_EDGES = [(0, 1), (1, 2), (2, 3), (2, 4), (2, 5), (7, 8), (8, 9), (9, 10), (9, 11), (9, 12),
              (0, 7), (0, 6), (7, 13), (6, 13)]


def find_sequence(data_dir: Path, sequence_id: int) -> tuple[Path, str]:
    """The parquet file and phrase of a sequence, from train.csv or supplemental_metadata.csv."""
    from aslfr.data.kaggle import METADATA_FILES, read_metadata

    listed = [source for source, name in METADATA_FILES.items() if (data_dir / name).is_file()]
    if not listed:
        raise DataError(f"{data_dir}: holds neither {' nor '.join(METADATA_FILES.values())} "
                        f"(is it a Kaggle-layout directory?)")
    for source in listed:
        for r in read_metadata(data_dir, source):
            if r.sequence_id == sequence_id:
                return data_dir / r.path, r.phrase
    raise DataError(f"{data_dir}: sequence_id {sequence_id} is not listed in "
                    f"{' or '.join(METADATA_FILES[s] for s in listed)}")


def _box(points: np.ndarray, margin: float = 0.1) -> tuple[np.ndarray, float]:
    """Centre and half-size of a square around the finite points (robust to stray frames)."""
    finite = points[np.isfinite(points).all(-1)]
    if not len(finite):
        return np.array([0.5, 0.5]), 0.5
    lo, hi = np.percentile(finite, 1, axis=0), np.percentile(finite, 99, axis=0)
    return (lo + hi) / 2, float((hi - lo).max()) / 2 * (1 + margin) + 1e-3


def _draw(ax, p: np.ndarray, centre: np.ndarray, half: float, body: bool) -> None:
    ax.clear()
    ax.set_xlim(centre[0] - half, centre[0] + half)
    ax.set_ylim(centre[1] + half, centre[1] - half)  # image coordinates: y grows downwards
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    if body:
        for a, b in POSE_EDGES:
            ax.plot(p[[86 + a, 86 + b], 0], p[[86 + a, 86 + b], 1], "-", color="#009988", lw=1.5)
        ax.plot(p[42:86, 0], p[42:86, 1], ".", color="#777777", ms=2)
    for offset, colour in ((0, "#ee7733"), (21, "#0077bb")):
        for a, b in HAND_EDGES:
            ax.plot(p[[offset + a, offset + b], 0], p[[offset + a, offset + b], 1], "-", color=colour,
                    lw=2.5 if not body else 1.2)
        ax.plot(p[offset:offset + 21, 0], p[offset:offset + 21, 1], "o", color=colour, ms=4 if not body else 1.5)


def render_frames(frames: np.ndarray, phrase: str | None, predictions: list[str] | None = None,
                  height: int = 300) -> list[np.ndarray]:
    """[T, 200] selected columns -> T RGB images: on the left the whole signer (arms green, lips
    and nose grey, right hand orange, left hand blue), on the right the signing hand close up;
    below, the true phrase and the running prediction."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xy = rows_to_coords(frames)  # [T, 100, 2]
    seen = [np.isfinite(xy[:, s:s + 21]).all(-1).any(-1).sum() for s in (0, 21)]
    hand = 0 if seen[0] >= seen[1] else 21
    body_box = _box(xy.reshape(-1, 2))
    hand_box = _box(xy[:, hand:hand + 21].reshape(-1, 2))
    fig = plt.figure(figsize=(2 * height / 80, (height + 50) / 80), dpi=80)
    body_ax = fig.add_axes([0.01, 50 / (height + 50), 0.48, height / (height + 50) - 0.06])
    hand_ax = fig.add_axes([0.51, 50 / (height + 50), 0.48, height / (height + 50) - 0.06])
    text = fig.add_axes([0, 0, 1, 50 / (height + 50)])
    images = []
    for t in range(len(xy)):
        _draw(body_ax, xy[t], *body_box, body=True)
        _draw(hand_ax, xy[t], *hand_box, body=False)
        body_ax.set_title(f"frame {t + 1}/{len(xy)}", fontsize=8)
        hand_ax.set_title(("right" if hand == 0 else "left") + " hand", fontsize=8)
        text.clear()
        text.axis("off")
        if phrase is not None:
            text.text(0.02, 0.55, f"true: {phrase}", fontsize=10, family="monospace")
        if predictions is not None:
            text.text(0.02, 0.1, f"pred: {predictions[t]}", fontsize=10, family="monospace", color="#cc3311")
        fig.canvas.draw()
        images.append(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    plt.close(fig)
    return images


def show(data_dir: str | Path, sequence_id: int | None, out: str | Path, model: str | Path | None = None,
         fps: int = 15, every: int = 1) -> dict:
    import imageio.v3 as iio

    data_dir, out = Path(data_dir), Path(out)
    if out.suffix.lower() not in (".gif", ".mp4"):
        raise ValueError(f"{out}: expected a .gif or .mp4 output")
    if every < 1 or fps < 1:
        raise ValueError(f"--every {every} --fps {fps}: both must be at least 1")
    if not data_dir.exists():
        raise FileNotFoundError(f"{data_dir}: data directory not found")
    if data_dir.is_dir() and sequence_id is None:
        raise ValueError(f"{data_dir}: a data directory needs --sequence-id")
    check_output_file(out)  # before the work
    if data_dir.is_dir():
        parquet, phrase = find_sequence(data_dir, sequence_id)
    else:  # one recording: a .pose file or a parquet (of one sequence, or --sequence-id)
        parquet, phrase = data_dir, None
    found = list(sequences_of(parquet, SELECTED_COLUMNS, sequence_id))
    if len(found) != 1:
        raise ValueError(f"{parquet}: holds {len(found)} sequences; pass --sequence-id")
    (_, frames), = found
    shown = list(range(0, len(frames), every))
    predictions = None
    if model is not None:
        from aslfr.recognizer import Recognizer

        rec = Recognizer(model)
        predictions = [rec.decode(frames[:t + 1]) for t in shown]  # what the model says after each frame
    images = render_frames(frames[shown], phrase, predictions)
    tmp = out.with_name(f".{out.stem}.partial{out.suffix}")
    if out.suffix.lower() == ".gif":
        iio.imwrite(tmp, np.stack(images), extension=".gif", duration=1000 / fps, loop=0)
    else:
        iio.imwrite(tmp, np.stack(images), extension=".mp4", fps=fps, codec="libx264")
    os.replace(tmp, out)
    return {"frames": len(images), "phrase": phrase, "prediction": predictions[-1] if predictions else None,
            "out": str(out)}


__all__ = ["find_sequence", "render_frames", "show"]
