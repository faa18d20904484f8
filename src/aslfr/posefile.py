"""`.pose` files, the sign-language community's pose format (the `pose-format` package), in its
MediaPipe Holistic layout <-> Kaggle-layout landmark rows ([T, 1629]: x, y, z of face,
left hand, pose, right hand).

The layout is pose-format's own for Holistic: components POSE_LANDMARKS (33 points, MediaPipe's
PoseLandmark names), FACE_LANDMARKS (468 points named "0".."467"), LEFT_HAND_LANDMARKS and
RIGHT_HAND_LANDMARKS (21 points, HandLandmark names) and POSE_WORLD_LANDMARKS (33), point
format XYZC, one person. Coordinates are in pixels (x * width, y * height, z as is) and a point
that was not detected has confidence 0 (pose-format masks it): that is our NaN. Kaggle's
normalised coordinates have no frame size, so a parquet becomes a .pose of 1024 x 1024 pixels;
scaling by a power of two is exact in binary floating point, so parquet -> .pose -> parquet
gives back every value bit for bit. World landmarks are not in the Kaggle layout: they are
written as not detected and ignored when read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from aslfr.landmarks import LANDMARK_COLUMNS, PARTS

POSE_POINTS = ["NOSE", "LEFT_EYE_INNER", "LEFT_EYE", "LEFT_EYE_OUTER", "RIGHT_EYE_INNER", "RIGHT_EYE",
               "RIGHT_EYE_OUTER", "LEFT_EAR", "RIGHT_EAR", "MOUTH_LEFT", "MOUTH_RIGHT", "LEFT_SHOULDER",
               "RIGHT_SHOULDER", "LEFT_ELBOW", "RIGHT_ELBOW", "LEFT_WRIST", "RIGHT_WRIST", "LEFT_PINKY",
               "RIGHT_PINKY", "LEFT_INDEX", "RIGHT_INDEX", "LEFT_THUMB", "RIGHT_THUMB", "LEFT_HIP", "RIGHT_HIP",
               "LEFT_KNEE", "RIGHT_KNEE", "LEFT_ANKLE", "RIGHT_ANKLE", "LEFT_HEEL", "RIGHT_HEEL",
               "LEFT_FOOT_INDEX", "RIGHT_FOOT_INDEX"]
HAND_POINTS = ["WRIST", "THUMB_CMC", "THUMB_MCP", "THUMB_IP", "THUMB_TIP", "INDEX_FINGER_MCP",
               "INDEX_FINGER_PIP", "INDEX_FINGER_DIP", "INDEX_FINGER_TIP", "MIDDLE_FINGER_MCP",
               "MIDDLE_FINGER_PIP", "MIDDLE_FINGER_DIP", "MIDDLE_FINGER_TIP", "RING_FINGER_MCP", "RING_FINGER_PIP",
               "RING_FINGER_DIP", "RING_FINGER_TIP", "PINKY_MCP", "PINKY_PIP", "PINKY_DIP", "PINKY_TIP"]
POSE_LIMBS = [(0, 1), (0, 4), (1, 2), (2, 3), (3, 7), (4, 5), (5, 6), (6, 8), (9, 10), (11, 12), (11, 13), (11, 23),
              (12, 14), (12, 24), (13, 15), (14, 16), (15, 17), (15, 19), (15, 21), (16, 18), (16, 20), (16, 22),
              (17, 19), (18, 20), (23, 24), (23, 25), (24, 26), (25, 27), (26, 28), (27, 29), (27, 31), (28, 30),
              (28, 32), (29, 31), (30, 32)]
HAND_LIMBS = [(0, 1), (0, 5), (0, 17), (1, 2), (2, 3), (3, 4), (5, 6), (5, 9), (6, 7), (7, 8), (9, 10), (9, 13),
              (10, 11), (11, 12), (13, 14), (13, 17), (14, 15), (15, 16), (17, 18), (18, 19), (19, 20)]
#: (pose-format component, our part or None, point names, limbs, colour), in pose-format's order
COMPONENTS = [("POSE_LANDMARKS", "pose", POSE_POINTS, POSE_LIMBS, (255, 0, 0)),
              ("FACE_LANDMARKS", "face", [str(i) for i in range(468)], [], (128, 0, 0)),
              ("LEFT_HAND_LANDMARKS", "left_hand", HAND_POINTS, HAND_LIMBS, (0, 255, 0)),
              ("RIGHT_HAND_LANDMARKS", "right_hand", HAND_POINTS, HAND_LIMBS, (0, 0, 255)),
              ("POSE_WORLD_LANDMARKS", None, POSE_POINTS, POSE_LIMBS, (255, 0, 0))]
SIZE = 1024  # the frame size given to coordinates that have none (a power of two: exact)


def _part_columns(part: str) -> np.ndarray:
    """[3, n] indices of a part's x, y, z columns in LANDMARK_COLUMNS."""
    where = {c: i for i, c in enumerate(LANDMARK_COLUMNS)}
    return np.array([[where[f"{a}_{part}_{i}"] for i in range(PARTS[part])] for a in "xyz"])


def _pose_format():  # noqa: ANN202
    import importlib.util

    if importlib.util.find_spec("pose_format") is None:
        raise ValueError("reading and writing .pose files needs the pose-format package: "
                         "pip install pose-format==0.15.0") from None
    from pose_format import Pose
    from pose_format.numpy import NumPyPoseBody
    from pose_format.pose_header import PoseHeader, PoseHeaderComponent, PoseHeaderDimensions
    return Pose, NumPyPoseBody, PoseHeader, PoseHeaderComponent, PoseHeaderDimensions


def rows_to_pose(rows: np.ndarray, fps: float, width: int = SIZE, height: int = SIZE):  # noqa: ANN201
    """[T, 1629] Kaggle-layout rows (normalised, NaN where not detected) -> a pose-format Pose."""
    Pose, NumPyPoseBody, PoseHeader, PoseHeaderComponent, PoseHeaderDimensions = _pose_format()
    rows = np.asarray(rows, np.float32)
    if rows.ndim != 2 or rows.shape[1] != len(LANDMARK_COLUMNS):
        raise ValueError(f"rows of shape {rows.shape}: expected [T, {len(LANDMARK_COLUMNS)}]")
    scale = np.array([width, height, 1], np.float64)[:, None]
    blocks, confidences = [], []
    for _, part, points, _, _ in COMPONENTS:
        if part is None:
            blocks.append(np.zeros((len(rows), len(points), 3), np.float32))
            confidences.append(np.zeros((len(rows), len(points)), np.float32))
            continue
        xyz = rows[:, _part_columns(part)].astype(np.float64) * scale          # [T, 3, n]
        found = np.isfinite(xyz).all(1)                                         # [T, n]
        blocks.append(np.where(found[:, None], xyz, 0).transpose(0, 2, 1).astype(np.float32))
        confidences.append(found.astype(np.float32))
    data = np.concatenate(blocks, 1)[:, None]                                   # [T, 1, 576, 3]
    confidence = np.concatenate(confidences, 1)[:, None]                        # [T, 1, 576]
    mask = np.repeat((confidence == 0)[..., None], 3, -1)
    body = NumPyPoseBody(fps=fps, data=np.ma.masked_array(data, mask=mask), confidence=confidence)
    header = PoseHeader(version=0.2, dimensions=PoseHeaderDimensions(width=width, height=height, depth=0),
                        components=[PoseHeaderComponent(name=n, points=list(p), limbs=list(lm), colors=[c],
                                                        point_format="XYZC") for n, _, p, lm, c in COMPONENTS])
    return Pose(header, body)


def pose_to_rows(pose, where: str = ".pose") -> tuple[np.ndarray, float]:  # noqa: ANN001
    """A pose-format Pose in the Holistic layout -> ([T, 1629] rows, NaN where not detected; fps).
    Its components are found by name, its points by name; the first person is read."""
    header, body = pose.header, pose.body
    components = {c.name: c for c in header.components}
    offsets, start = {}, 0
    for c in header.components:
        offsets[c.name] = start
        start += len(c.points)
    data = np.asarray(body.data.filled(0) if np.ma.isMaskedArray(body.data) else body.data, np.float64)
    if data.ndim != 4 or data.shape[1] < 1 or data.shape[-1] < 2:
        raise ValueError(f"{where}: pose data of shape {data.shape}: expected [frames, people, points, XY(Z)]")
    data, confidence = data[:, 0], np.asarray(body.confidence, np.float64)[:, 0]
    width, height = header.dimensions.width or 1, header.dimensions.height or 1
    rows = np.full((len(data), len(LANDMARK_COLUMNS)), np.nan, np.float32)
    for name, part, points, _, _ in COMPONENTS:
        if part is None:
            continue
        if name not in components:
            raise ValueError(f"{where}: no {name} component (it has {', '.join(components)}); "
                             f"expected MediaPipe Holistic's layout")
        index = {p: k for k, p in enumerate(components[name].points)}
        missing = [p for p in points if p not in index]
        if missing:
            raise ValueError(f"{where}: component {name} lacks point(s) {', '.join(missing[:3])}")
        cols = [offsets[name] + index[p] for p in points]
        xyz = data[:, cols, :3] if data.shape[-1] >= 3 else np.concatenate(
            [data[:, cols, :2], np.zeros((len(data), len(cols), 1))], -1)
        xyz = xyz / np.array([width, height, 1], np.float64)
        found = confidence[:, cols] > 0
        rows[:, _part_columns(part).T.reshape(-1)] = np.where(found[..., None], xyz, np.nan).reshape(len(data), -1)
    return rows, float(body.fps)


def write_pose(path: Path, rows: np.ndarray, fps: float, width: int = SIZE, height: int = SIZE) -> Path:
    path = Path(path)
    pose = rows_to_pose(rows, fps, width, height)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    with open(tmp, "wb") as f:
        pose.write(f)
    os.replace(tmp, path)
    return path


def read_pose(path: Path) -> tuple[np.ndarray, float]:
    Pose = _pose_format()[0]
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found")
    try:
        pose = Pose.read(path.read_bytes())
    except Exception as e:  # noqa: BLE001 - the reader raises many kinds on a bad file
        raise ValueError(f"{path}: not a readable .pose file ({type(e).__name__}: {str(e)[:160]})") from None
    return pose_to_rows(pose, str(path))


__all__ = ["COMPONENTS", "pose_to_rows", "read_pose", "rows_to_pose", "write_pose"]
