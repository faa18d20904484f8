"""Character maps: the competition's 59 characters by default, or any alphabet of the Kaggle file's
format (`character_to_prediction_index.json`: token -> index 0..n-1). The CTC blank, which also
pads labels, is index n (59 for the competition's map, as in the seed).

A token is usually one character; a map may also hold longer tokens (a sign for "sch", say):
phrases are split into tokens by the longest match at each position.
"""

from __future__ import annotations

import hashlib
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


#: where an exported model with another map carries it (ONNX metadata, inference_args.json)
CHARMAP_KEY = "character_to_prediction_index"


class CharacterMap:
    """Tokens in index order; `blank` = their number; `n_classes` = blank + 1 (the model's outputs)."""

    def __init__(self, tokens: Sequence[str], where: str = "character map") -> None:
        tokens = tuple(tokens)
        if not tokens:
            raise ValueError(f"{where}: no characters")
        bad = [t for t in tokens if not isinstance(t, str) or not t]
        if bad:
            raise ValueError(f"{where}: every character must be a non-empty string (found {bad[0]!r})")
        if len(set(tokens)) != len(tokens):
            dup = next(t for t in tokens if tokens.count(t) > 1)
            raise ValueError(f"{where}: character {dup!r} appears twice")
        self.tokens = tokens
        self.index = {t: i for i, t in enumerate(tokens)}
        self.blank = len(tokens)
        self.n_classes = len(tokens) + 1
        self._longest = max(len(t) for t in tokens)

    @classmethod
    def from_mapping(cls, mapping: object, where: str = "character map") -> "CharacterMap":
        if not isinstance(mapping, dict) or not mapping:
            raise ValueError(f"{where}: expected a JSON object of character -> index")
        whole = all(isinstance(v, int) and not isinstance(v, bool) for v in mapping.values())
        indices = sorted(mapping.values()) if whole else None
        if indices != list(range(len(mapping))):
            raise ValueError(f"{where}: the indices must be the whole numbers 0 to {len(mapping) - 1}, each once")
        return cls(sorted(mapping, key=mapping.get), where)

    @classmethod
    def load(cls, path: str | Path) -> "CharacterMap":
        path = Path(path)
        try:
            mapping = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: character map not found") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None
        return cls.from_mapping(mapping, str(path))

    def to_mapping(self) -> dict[str, int]:
        return dict(self.index)

    def save(self, path: Path) -> None:
        from aslfr.files import atomic_write

        text = json.dumps(self.to_mapping(), indent=1, ensure_ascii=False) + "\n"
        atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))

    @property
    def is_competition(self) -> bool:
        return self.tokens == tuple(CHARACTERS)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.tokens).encode()).hexdigest()[:16]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharacterMap) and self.tokens == other.tokens

    def __hash__(self) -> int:
        return hash(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def split(self, phrase: str) -> tuple[list[int], str | None]:
        """Token indices by longest match, and the first character no token starts with (None
        when the whole phrase is covered)."""
        out, i = [], 0
        while i < len(phrase):
            for n in range(min(self._longest, len(phrase) - i), 0, -1):
                k = self.index.get(phrase[i:i + n])
                if k is not None:
                    out.append(k)
                    i += n
                    break
            else:
                return out, phrase[i]
        return out, None

    def unknown(self, phrase: str) -> str | None:
        return self.split(phrase)[1]

    def encode(self, phrase: str) -> np.ndarray:
        out, bad = self.split(phrase)
        if bad is not None:
            raise ValueError(f"phrase {phrase!r}: character {bad!r} is not in the character map")
        return np.array(out, dtype=np.int64)

    def decode(self, indices: Iterable[int]) -> str:
        return "".join(self.tokens[i] for i in indices if 0 <= i < self.blank)

    def ctc_greedy(self, frame_argmax: Sequence[int] | np.ndarray) -> str:
        """Greedy CTC: collapse repeats, then drop blanks."""
        out, prev = [], -1
        for k in np.asarray(frame_argmax).tolist():
            if k != prev and k != self.blank:
                out.append(k)
            prev = k
        return self.decode(out)


COMPETITION = CharacterMap(CHARACTERS, "the competition's map")


def load_character_map(path: str | Path) -> dict[str, int]:
    """Read character_to_prediction_index.json and check it is the competition's map."""
    mapping = CharacterMap.load(path)
    if not mapping.is_competition:
        raise ValueError(f"{path}: character map differs from the competition's 59-character map")
    return mapping.to_mapping()


def unknown_characters(phrase: str) -> set[str]:
    return {c for c in phrase if c not in CHAR_TO_INDEX}


def encode(phrase: str) -> np.ndarray:
    return COMPETITION.encode(phrase)


def decode_indices(indices: Iterable[int]) -> str:
    return COMPETITION.decode(indices)


def ctc_greedy(frame_argmax: Sequence[int] | np.ndarray) -> str:
    return COMPETITION.ctc_greedy(frame_argmax)
