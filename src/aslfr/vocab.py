"""The competition's 59-character map, plus the seed's blank/padding index 59."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

CHARACTERS = " !#$%&'()*+,-./0123456789:;=?@[_abcdefghijklmnopqrstuvwxyz~"
CHAR_TO_INDEX: dict[str, int] = {c: i for i, c in enumerate(CHARACTERS)}
N_CHARS = len(CHARACTERS)  # 59
BLANK = N_CHARS  # 59: CTC blank and label padding
N_CLASSES = N_CHARS + 1  # 60
MAX_PHRASE = 64  # labels are padded to this length


def load_character_map(path: str | Path) -> dict[str, int]:
    """Read character_to_prediction_index.json and check it is the competition's map."""
    path = Path(path)
    try:
        mapping = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: character map not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if mapping != CHAR_TO_INDEX:
        raise ValueError(f"{path}: character map differs from the competition's 59-character map")
    return mapping


def unknown_characters(phrase: str) -> set[str]:
    return {c for c in phrase if c not in CHAR_TO_INDEX}


def encode(phrase: str) -> np.ndarray:
    try:
        return np.array([CHAR_TO_INDEX[c] for c in phrase], dtype=np.int64)
    except KeyError as e:
        raise ValueError(f"phrase {phrase!r}: character {e.args[0]!r} is not in the character map") from None


def decode_indices(indices: Iterable[int]) -> str:
    return "".join(CHARACTERS[i] for i in indices if 0 <= i < N_CHARS)


def ctc_greedy(frame_argmax: Sequence[int] | np.ndarray) -> str:
    """Greedy CTC: collapse repeats, then drop blanks."""
    out, prev = [], -1
    for k in np.asarray(frame_argmax).tolist():
        if k != prev and k != BLANK:
            out.append(k)
        prev = k
    return decode_indices(out)
