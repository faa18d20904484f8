"""MediaPipe Holistic landmark layout as Kaggle stores it, and the seed's landmark selection.

Everything that names a column or a landmark index lives here, so that the data reader, the
feature code, the augmentations and the exported model agree by construction.
"""

from __future__ import annotations

import numpy as np

PARTS: dict[str, int] = {"face": 468, "left_hand": 21, "pose": 33, "right_hand": 21}
AXES = ("x", "y", "z")

#: The 1,629 landmark columns in Kaggle's order: all x (face, left_hand, pose, right_hand), then y, then z.
LANDMARK_COLUMNS: list[str] = [
    f"{axis}_{part}_{i}" for axis in AXES for part, n in PARTS.items() for i in range(n)
]

# Lips plus four nose points, sorted (SEED-SPEC section 3).
FACE = [0, 1, 2, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 98, 146, 178, 181,
        185, 191, 267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 327, 375, 402, 405,
        409, 415]
LEFT_LIP = [84, 181, 91, 146, 61, 185, 40, 39, 37, 87, 178, 88, 95, 78, 191, 80, 81, 82]
RIGHT_LIP = [314, 405, 321, 375, 291, 409, 270, 269, 267, 317, 402, 318, 324, 308, 415, 310, 311, 312]
LEFT_NOSE, RIGHT_NOSE = 98, 327
LEFT_POSE = [11, 13, 15, 17, 19, 21, 23]
RIGHT_POSE = [12, 14, 16, 18, 20, 22, 24]
POSE = LEFT_POSE + RIGHT_POSE
HAND = list(range(21))

#: (part, landmark) of the 100 selected landmarks, in input column order.
SELECTED_LANDMARKS: list[tuple[str, int]] = (
    [("right_hand", i) for i in HAND]
    + [("left_hand", i) for i in HAND]
    + [("face", i) for i in FACE]
    + [("pose", i) for i in POSE]
)
N_SELECTED = len(SELECTED_LANDMARKS)  # 100

#: The 200 columns the model reads (inference_args.json): x of the 100 landmarks, then y.
SELECTED_COLUMNS: list[str] = [f"{a}_{p}_{i}" for a in ("x", "y") for p, i in SELECTED_LANDMARKS]


def _pos(part: str, i: int) -> int:
    return SELECTED_LANDMARKS.index((part, i))


RIGHT_HAND_SLICE = slice(0, 21)
LEFT_HAND_SLICE = slice(21, 42)

#: Position of face landmark 17 (the centring lip point) among the 100 selected landmarks.
CENTRE_POINT = _pos("face", 17)

#: Input position of each model node: FACE, right hand, left hand, right pose, left pose.
NODE_ORDER = np.array(
    [_pos("face", i) for i in FACE]
    + [_pos("right_hand", i) for i in HAND]
    + [_pos("left_hand", i) for i in HAND]
    + [_pos("pose", i) for i in RIGHT_POSE]
    + [_pos("pose", i) for i in LEFT_POSE],
    dtype=np.int64,
)


def _flip_permutation() -> np.ndarray:
    """Index permutation of the 100 selected landmarks that swaps every left/right pair."""
    perm = np.arange(N_SELECTED)
    pairs = [(("right_hand", i), ("left_hand", i)) for i in HAND]
    pairs += [(("face", a), ("face", b)) for a, b in zip(LEFT_LIP, RIGHT_LIP)]
    pairs += [(("face", LEFT_NOSE), ("face", RIGHT_NOSE))]
    pairs += [(("pose", a), ("pose", b)) for a, b in zip(LEFT_POSE, RIGHT_POSE)]
    for a, b in pairs:
        pa, pb = _pos(*a), _pos(*b)
        perm[pa], perm[pb] = pb, pa
    return perm


#: coords[:, FLIP_PERMUTATION] swaps left and right (hands, lips, nose, pose).
FLIP_PERMUTATION = _flip_permutation()
