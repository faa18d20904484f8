"""A synthetic fingerspelling dataset in the exact Kaggle layout.

The real data cannot be shipped, so this generator writes data that exercises every stage and
has to be learned: a kinematic 21-point hand whose finger flexion, spread, thumb and wrist
orientation encode each of the 59 characters; signers who differ in handedness, hand size,
position, speed, camera tilt, noise and in how they form each letter (about as much as close
letters differ: m/n, a/s/e/t, u/v/r, i/j, d/z); smooth transitions, about 9 frames per
character; a moving face, lips and pose; bursts of frames where the hand is not detected; and
planted corrupt samples (no hand, or the landmarks of a different phrase) listed in
`corruptions.csv`. Everything is a pure function of the seed.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aslfr.files import write_csv, write_json
from aslfr.landmarks import LANDMARK_COLUMNS, PARTS
from aslfr.vocab import CHAR_TO_INDEX, CHARACTERS, COMPETITION, CharacterMap

# --------------------------------------------------------------------------------------------
# The hand: pose parameters -> 21 landmarks
# --------------------------------------------------------------------------------------------

#: Pose parameters of a character. Curls are 0 (straight) to 1 (fist); angles are in units of 90°.
PARAMS = ("curl_index", "curl_middle", "curl_ring", "curl_pinky", "spread",
          "thumb_abduction", "thumb_across", "thumb_flex", "roll", "pitch", "yaw")
N_PARAMS = len(PARAMS)

# ASL-like hand shapes: [ci, cm, cr, cp, spread, t_abd, t_across, t_flex, roll, pitch, yaw].
# Close letters are deliberately close (m/n, a/s/e/t, u/v/r, i/j, d/z); j and z differ from
# i and d mainly by their motion.
_LETTERS: dict[str, list[float]] = {
    "a": [1.00, 1.00, 1.00, 1.00, 0.00, 0.20, 0.00, 0.00, 0.00, 0.00, 0.00],
    "b": [0.00, 0.00, 0.00, 0.00, 0.00, 0.10, 0.90, 0.80, 0.00, 0.00, 0.00],
    "c": [0.45, 0.45, 0.45, 0.45, 0.05, 0.55, 0.10, 0.20, 0.00, 0.00, 0.35],
    "d": [0.00, 0.80, 0.80, 0.80, 0.00, 0.20, 0.55, 0.50, 0.00, 0.00, 0.00],
    "e": [0.75, 0.75, 0.75, 0.75, 0.00, 0.05, 0.75, 0.85, 0.00, 0.00, 0.00],
    "f": [0.65, 0.00, 0.00, 0.00, 0.45, 0.30, 0.35, 0.50, 0.00, 0.00, 0.00],
    "g": [0.00, 1.00, 1.00, 1.00, 0.00, 0.50, 0.00, 0.10, 0.95, 0.00, 0.00],
    "h": [0.00, 0.00, 1.00, 1.00, 0.00, 0.20, 0.40, 0.40, 0.95, 0.00, 0.00],
    "i": [1.00, 1.00, 1.00, 0.00, 0.00, 0.10, 0.60, 0.50, 0.00, 0.00, 0.00],
    "j": [1.00, 1.00, 1.00, 0.00, 0.00, 0.10, 0.60, 0.50, 0.10, 0.00, 0.00],
    "k": [0.00, 0.00, 1.00, 1.00, 0.40, 0.50, 0.30, 0.10, 0.00, 0.00, 0.00],
    "l": [0.00, 1.00, 1.00, 1.00, 0.00, 1.00, 0.00, 0.00, 0.00, 0.00, 0.00],
    "m": [0.85, 0.85, 0.85, 1.00, 0.00, 0.00, 0.90, 0.70, 0.00, 0.00, 0.00],
    "n": [0.85, 0.85, 1.00, 1.00, 0.00, 0.00, 0.70, 0.70, 0.00, 0.00, 0.00],
    "o": [0.62, 0.62, 0.62, 0.62, 0.00, 0.30, 0.50, 0.50, 0.00, 0.00, 0.20],
    "p": [0.00, 0.30, 1.00, 1.00, 0.40, 0.50, 0.30, 0.10, 0.00, 1.30, 0.00],
    "q": [0.00, 1.00, 1.00, 1.00, 0.00, 0.50, 0.00, 0.10, 0.00, 1.40, 0.00],
    "r": [0.00, 0.00, 1.00, 1.00, -0.45, 0.10, 0.60, 0.50, 0.00, 0.00, 0.00],
    "s": [1.00, 1.00, 1.00, 1.00, 0.00, 0.05, 0.80, 0.30, 0.00, 0.00, 0.00],
    "t": [0.95, 1.00, 1.00, 1.00, 0.00, 0.10, 0.45, 0.55, 0.00, 0.00, 0.00],
    "u": [0.00, 0.00, 1.00, 1.00, 0.00, 0.10, 0.60, 0.50, 0.00, 0.00, 0.00],
    "v": [0.00, 0.00, 1.00, 1.00, 0.35, 0.10, 0.60, 0.50, 0.00, 0.00, 0.00],
    "w": [0.00, 0.00, 0.00, 1.00, 0.45, 0.10, 0.70, 0.60, 0.00, 0.00, 0.00],
    "x": [0.50, 1.00, 1.00, 1.00, 0.00, 0.10, 0.50, 0.50, 0.00, 0.00, 0.00],
    "y": [1.00, 1.00, 1.00, 0.00, 0.30, 1.00, 0.00, 0.00, 0.00, 0.00, 0.00],
    "z": [0.00, 0.85, 0.85, 0.85, 0.00, 0.20, 0.55, 0.50, 0.00, 0.00, 0.00],
}
# Digits are signed palm-in (yaw), which keeps them apart from the letters they resemble.
_DIGITS: dict[str, list[float]] = {
    "0": [0.62, 0.62, 0.62, 0.62, 0.00, 0.30, 0.50, 0.50, 0.00, 0.00, 0.70],
    "1": [0.00, 1.00, 1.00, 1.00, 0.00, 0.05, 0.80, 0.60, 0.00, 0.00, 0.70],
    "2": [0.00, 0.00, 1.00, 1.00, 0.40, 0.05, 0.80, 0.60, 0.00, 0.00, 0.70],
    "3": [0.00, 0.00, 1.00, 1.00, 0.40, 0.90, 0.00, 0.00, 0.00, 0.00, 0.70],
    "4": [0.00, 0.00, 0.00, 0.00, 0.45, 0.00, 0.90, 0.70, 0.00, 0.00, 0.70],
    "5": [0.00, 0.00, 0.00, 0.00, 0.50, 1.00, 0.00, 0.00, 0.00, 0.00, 0.70],
    "6": [0.00, 0.00, 0.00, 1.00, 0.45, 0.30, 0.70, 0.70, 0.00, 0.00, -0.40],
    "7": [0.00, 0.00, 1.00, 0.00, 0.45, 0.30, 0.70, 0.70, 0.00, 0.00, -0.40],
    "8": [0.00, 1.00, 0.00, 0.00, 0.45, 0.30, 0.70, 0.70, 0.00, 0.00, -0.40],
    "9": [0.65, 0.00, 0.00, 0.00, 0.45, 0.30, 0.35, 0.50, 0.00, 0.00, -0.40],
}
#: How much one instance of a letter varies around the signer's way of forming it.
INSTANCE_NOISE = 0.035
#: Characters that are motions: during the hold the hand traces a path (see `_motion`).
MOTION_CHARS = ("j", "z")


def _character_templates() -> np.ndarray:
    """(59, N_PARAMS) pose parameters per character index. Punctuation gets seeded shapes that
    keep a minimum distance from every other character."""
    table = np.full((len(CHARACTERS), N_PARAMS), np.nan)
    for c, p in {**_LETTERS, **_DIGITS}.items():
        table[CHAR_TO_INDEX[c]] = p
    rng = np.random.default_rng(20230501)
    lo = np.array([0, 0, 0, 0, -0.2, 0, 0, 0, -0.6, -0.4, -0.8])
    hi = np.array([1, 1, 1, 1, 0.5, 1, 1, 1, 0.6, 0.9, 0.8])
    weights = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1.0])
    for k in range(len(CHARACTERS)):
        if not np.isnan(table[k, 0]):
            continue
        for _ in range(10_000):
            cand = rng.uniform(lo, hi)
            known = table[~np.isnan(table[:, 0])]
            if np.min(np.abs((known - cand) * weights).sum(1)) > 1.2:
                break
        table[k] = cand
    return table


TEMPLATES = _character_templates()


def character_templates(charmap: CharacterMap) -> np.ndarray:
    """(len(charmap), N_PARAMS) hand shapes for any alphabet: the competition's own for its map;
    otherwise a token that is one of the ASL letters or digits above keeps that shape, and every
    other token gets a shape drawn from a generator seeded by the token itself (so a character
    looks the same in every dataset that has it), at a distance from those already placed."""
    if charmap.is_competition:
        return TEMPLATES
    known = {**_LETTERS, **_DIGITS}
    table = np.full((len(charmap), N_PARAMS), np.nan)
    for k, token in enumerate(charmap.tokens):
        if token in known:
            table[k] = known[token]
    lo = np.array([0, 0, 0, 0, -0.2, 0, 0, 0, -0.6, -0.4, -0.8])
    hi = np.array([1, 1, 1, 1, 0.5, 1, 1, 1, 0.6, 0.9, 0.8])
    for k, token in enumerate(charmap.tokens):
        if not np.isnan(table[k, 0]):
            continue
        rng = np.random.default_rng(list(token.encode("utf-8")))
        best, best_d = None, -1.0
        for _ in range(2000):
            cand = rng.uniform(lo, hi)
            placed = table[~np.isnan(table[:, 0])]
            d = float(np.min(np.abs(placed - cand).sum(1))) if len(placed) else np.inf
            if d > 1.2:
                best = cand
                break
            if d > best_d:
                best, best_d = cand, d
        table[k] = best
    return table

# Hand geometry in hand units (wrist to middle fingertip is about 1), local axes:
# u toward the thumb, v along the fingers, w out of the palm (toward the camera).
_MCP = np.array([[0.11, 0.45, 0.0], [0.035, 0.47, 0.0], [-0.04, 0.45, 0.0], [-0.11, 0.41, 0.0]])
_SEGMENTS = np.array([[0.22, 0.13, 0.10], [0.25, 0.15, 0.11], [0.23, 0.14, 0.10], [0.18, 0.10, 0.09]])
_SPREAD_DIR = np.radians([8.0, 0.0, -8.0, -16.0])  # fan angle of each finger at spread 0
_SPREAD_GAIN = np.radians([14.0, 3.0, -8.0, -20.0])
_FLEX = np.radians([80.0, 100.0, 70.0])
_THUMB_CMC = np.array([0.10, 0.08, 0.03])
_THUMB_SEGMENTS = np.array([0.16, 0.13, 0.11])


def hand_points(params: np.ndarray, size: np.ndarray | float = 1.0) -> np.ndarray:
    """Forward kinematics: (..., N_PARAMS) pose parameters -> (..., 21, 3) points in local
    (u, v, w) axes, then rotated by the wrist (roll about the view axis, pitch, yaw)."""
    p = np.asarray(params, dtype=np.float64)
    shape = p.shape[:-1]
    out = np.zeros(shape + (21, 3))
    curls, spread = p[..., 0:4], p[..., 4:5]
    phi = _SPREAD_DIR + spread * _SPREAD_GAIN  # (..., 4) in-plane angle of each finger
    for f in range(4):
        pos = np.broadcast_to(_MCP[f], shape + (3,)).copy()
        out[..., 5 + 4 * f, :] = pos
        theta = np.zeros(shape)
        for j in range(3):
            theta = theta + curls[..., f] * _FLEX[j]
            d = np.stack([np.sin(phi[..., f]) * np.cos(theta),
                          np.cos(phi[..., f]) * np.cos(theta),
                          np.sin(theta)], -1)
            pos = pos + _SEGMENTS[f, j] * d
            out[..., 6 + 4 * f + j, :] = pos
    # Thumb: abduction opens it sideways, 'across' folds it over the palm, flex curls it.
    abd, across, flex = p[..., 5], p[..., 6], p[..., 7]
    alpha = np.radians(25.0 + 50.0 * abd - 85.0 * across)
    eps = np.radians(10.0 + 40.0 * across)
    pos = np.broadcast_to(_THUMB_CMC, shape + (3,)).copy()
    out[..., 1, :] = pos
    for j in range(3):
        a = alpha - np.radians(35.0) * flex * j
        e = eps + np.radians(20.0) * flex * j
        d = np.stack([np.sin(a) * np.cos(e), np.cos(a) * np.cos(e), np.sin(e)], -1)
        pos = pos + _THUMB_SEGMENTS[j] * d
        out[..., 2 + j, :] = pos
    out = out @ np.swapaxes(_rotation(p[..., 8], p[..., 9], p[..., 10]), -1, -2)
    return out * np.asarray(size)[..., None, None]


def _rotation(roll: np.ndarray, pitch: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation: yaw about v, then pitch about u, then roll about w (angles in 90°)."""
    r, pt, y = (np.pi / 2 * np.asarray(a) for a in (roll, pitch, yaw))
    one, zero = np.ones_like(r), np.zeros_like(r)
    rz = np.stack([np.stack([np.cos(r), -np.sin(r), zero], -1),
                   np.stack([np.sin(r), np.cos(r), zero], -1),
                   np.stack([zero, zero, one], -1)], -2)
    rx = np.stack([np.stack([one, zero, zero], -1),
                   np.stack([zero, np.cos(pt), -np.sin(pt)], -1),
                   np.stack([zero, np.sin(pt), np.cos(pt)], -1)], -2)
    ry = np.stack([np.stack([np.cos(y), zero, np.sin(y)], -1),
                   np.stack([zero, one, zero], -1),
                   np.stack([-np.sin(y), zero, np.cos(y)], -1)], -2)
    return rz @ rx @ ry


# --------------------------------------------------------------------------------------------
# Face and pose templates
# --------------------------------------------------------------------------------------------

def _face_template() -> np.ndarray:
    """(468, 3) face points in face units (width about 1, y down): a plausible oval with the
    lips and nose where FaceMesh puts them; only the lips and nose reach the model."""
    rng = np.random.default_rng(468)
    ang = rng.uniform(0, 2 * np.pi, 468)
    rad = np.sqrt(rng.uniform(0, 1, 468))
    face = np.stack([0.45 * rad * np.cos(ang), -0.05 + 0.6 * rad * np.sin(ang),
                     -0.08 * (1 - rad ** 2)], -1)
    rings = {  # left corner first, along the upper then the lower edge
        (0.20, 0.07, 0.0): ([61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291],
                            [61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291]),
        (0.14, 0.025, -0.01): ([78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308],
                               [78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308]),
    }
    for (rx, ry, z), (upper, lower) in rings.items():
        for sign, ids in ((-1, upper), (1, lower)):
            t = np.linspace(np.pi, 0, len(ids))
            face[ids] = np.stack([rx * np.cos(t), 0.33 + sign * ry * np.sin(t), np.full(len(ids), z)], -1)
    face[[1, 2, 98, 327]] = [[0, 0.08, -0.12], [0, 0.15, -0.09], [-0.08, 0.13, -0.05], [0.08, 0.13, -0.05]]
    return face


FACE_TEMPLATE = _face_template()
_LOWER_LIP = np.array([146, 91, 181, 84, 17, 314, 405, 321, 375, 95, 88, 178, 87, 14, 317, 402, 318, 324])


@dataclass(frozen=True)
class Signer:
    """Traits of one participant."""

    right_handed: bool
    hand_size: float        # image units per hand unit
    hand_pos: np.ndarray    # (2,) where the signing hand's wrist rests
    face_pos: np.ndarray    # (2,) face centre
    face_size: float
    speed: float            # frames per character / 9
    tilt: float             # camera roll, radians
    noise: float            # landmark jitter, image units
    style: np.ndarray       # (N_PARAMS,) how this signer forms every letter
    miss_rate: float        # share of frames where the signing hand is not detected
    other_hand_rate: float  # share of frames where the other hand is seen


def make_signer(rng: np.random.Generator) -> Signer:
    style_sd = np.full(N_PARAMS, 0.06)
    return Signer(
        right_handed=bool(rng.random() < 0.8),
        hand_size=float(rng.uniform(0.12, 0.20)),
        hand_pos=np.array([rng.uniform(0.25, 0.38), rng.uniform(0.50, 0.65)]),
        face_pos=np.array([rng.uniform(0.45, 0.55), rng.uniform(0.25, 0.35)]),
        face_size=float(rng.uniform(0.22, 0.32)),
        speed=float(rng.uniform(0.7, 1.35)),
        tilt=float(np.radians(rng.uniform(-8, 8))),
        noise=float(rng.uniform(0.001, 0.005)),
        style=rng.normal(0, style_sd),
        miss_rate=float(rng.beta(1.2, 6.0)),
        other_hand_rate=float(rng.choice([0.0, 0.0, 0.0, rng.uniform(0.05, 0.4)])),
    )


# --------------------------------------------------------------------------------------------
# A recording: phrase + signer -> (T, 543, 3)
# --------------------------------------------------------------------------------------------

def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0, 1)
    return x * x * (3 - 2 * x)


def _bursts(rng: np.random.Generator, t: int, rate: float, mean_len: float = 4.0) -> np.ndarray:
    """Boolean mask of frames lost in bursts (a two-state Markov chain) with about `rate` lost."""
    rate = float(np.clip(rate, 0, 0.95))
    if rate == 0:
        return np.zeros(t, bool)
    p_end = 1 / mean_len
    p_start = min(1.0, rate * p_end / max(1e-6, 1 - rate))
    out = np.zeros(t, bool)
    state = rng.random() < rate
    for i in range(t):
        out[i] = state
        state = (rng.random() >= p_end) if state else (rng.random() < p_start)
    return out


def render(phrase: str, signer: Signer, rng: np.random.Generator, charmap: CharacterMap = COMPETITION,
           templates: np.ndarray | None = None) -> np.ndarray:
    """Landmarks of `signer` fingerspelling `phrase`: (T, 543, 3) float32, NaN where undetected."""
    templates = TEMPLATES if templates is None else templates
    chars = charmap.encode(phrase).tolist()
    n = len(chars)
    dur = np.maximum(3, np.round(9.0 * signer.speed * rng.uniform(0.75, 1.25, n))).astype(int)
    lead_in, lead_out = int(rng.integers(2, 14)), int(rng.integers(2, 12))
    t_total = lead_in + int(dur.sum()) + lead_out
    starts = lead_in + np.concatenate([[0], np.cumsum(dur)[:-1]])

    # Per-instance shape: template + signer style + a little per-letter noise.
    shapes = templates[chars] + signer.style + rng.normal(0, INSTANCE_NOISE, (n, N_PARAMS))
    rest = np.array([0.5, 0.5, 0.5, 0.5, 0.1, 0.4, 0.3, 0.3, 0.0, 0.6, 0.0])
    keys = np.concatenate([rest[None], shapes, rest[None]])          # (n + 2, P)
    offsets = np.concatenate([[[0.0, 0.25]], rng.normal(0, 0.012, (n, 2)), [[0.02, 0.28]]])
    key_start = np.concatenate([[0], starts, [lead_in + dur.sum()]])
    key_len = np.concatenate([[lead_in], dur, [lead_out]])

    frames = np.arange(t_total)
    k = np.clip(np.searchsorted(key_start, frames, side="right") - 1, 0, n + 1)
    phase = (frames - key_start[k]) / key_len[k]
    hold = 0.6
    w = _smoothstep((phase - hold) / (1 - hold))
    nxt = np.minimum(k + 1, n + 1)
    params = (1 - w)[:, None] * keys[k] + w[:, None] * keys[nxt]
    pos = (1 - w)[:, None] * offsets[k] + w[:, None] * offsets[nxt]
    # A repeated letter is re-signed with a small sideways bounce, as signers do.
    key_chars = np.concatenate([[-1], chars, [-2]])
    repeat = (key_chars[k] == key_chars[nxt]) & (key_chars[k] >= 0)
    pos[:, 0] += np.where(repeat, 0.05 * np.sin(np.pi * w), 0.0)
    # Motion letters: j twists and hooks down, z traces a Z in the air.
    u = np.clip(phase / hold, 0, 1)
    is_j = key_chars[k] == charmap.index.get("j", -99)
    is_z = key_chars[k] == charmap.index.get("z", -99)
    params[:, 8] += np.where(is_j, 0.9 * u, 0.0)
    pos += np.where(is_j[:, None], np.stack([0.03 * u, 0.06 * np.sin(np.pi * u)], -1), 0.0)
    zx = np.interp(u, [0, 1 / 3, 2 / 3, 1], [0, 0.08, 0, 0.08])
    zy = np.interp(u, [0, 1 / 3, 2 / 3, 1], [0, 0, 0.07, 0.07])
    pos += np.where(is_z[:, None], np.stack([zx, zy], -1), 0.0)
    # Slow drift of the whole arm.
    drift = np.cumsum(rng.normal(0, 0.002, (t_total, 2)), 0)
    drift -= drift.mean(0)

    hand = hand_points(params)                                  # (T, 21, 3), hand units
    mirror = 1.0 if signer.right_handed else -1.0
    xy = np.empty((t_total, 543, 3))
    hx = hand[..., 0] * mirror * signer.hand_size
    hy = -hand[..., 1] * signer.hand_size
    hz = -hand[..., 2] * signer.hand_size
    base = signer.hand_pos.copy()
    if not signer.right_handed:
        base[0] = 1.0 - base[0]
    wrist = base + (pos + drift) * np.array([mirror, 1.0])
    dominant = np.stack([hx + wrist[:, None, 0], hy + wrist[:, None, 1], hz], -1)

    # Face: template, scaled and placed, nodding a little; the lower lip mouths words.
    head = signer.face_pos + 0.3 * drift + np.cumsum(rng.normal(0, 0.0008, (t_total, 2)), 0)
    face = np.broadcast_to(FACE_TEMPLATE, (t_total, 468, 3)).copy()
    mouth = 0.03 * (1 + np.sin(np.arange(t_total) * rng.uniform(0.3, 0.7) + rng.uniform(0, 6)))
    face[:, _LOWER_LIP, 1] += mouth[:, None]
    face = face * signer.face_size
    face[..., :2] += head[:, None, :]

    pose = _pose(head, signer, dominant, mirror, t_total, rng)
    other = _other_hand(rng, signer, t_total, mirror, pose)

    right, left = (dominant, other) if signer.right_handed else (other, dominant)
    offsets_part = np.cumsum([0] + list(PARTS.values()))
    for part, arr in zip(PARTS, (face, left, pose, right)):
        i = list(PARTS).index(part)
        xy[:, offsets_part[i]:offsets_part[i + 1]] = arr

    # Camera tilt about the image centre, then landmark jitter.
    c, s = np.cos(signer.tilt), np.sin(signer.tilt)
    x0, y0 = xy[..., 0] - 0.5, xy[..., 1] - 0.5
    xy[..., 0], xy[..., 1] = 0.5 + c * x0 - s * y0, 0.5 + s * x0 + c * y0
    xy = xy.astype(np.float32)
    xy += np.float32(signer.noise) * rng.standard_normal(xy.shape, dtype=np.float32)

    # Detection failures: the signing hand drops out in bursts, more when the hand moves fast.
    lost = _bursts(rng, t_total, signer.miss_rate)
    hand_slice = _part_slice("right_hand" if signer.right_handed else "left_hand")
    xy[lost, hand_slice] = np.nan
    return xy


def _part_slice(part: str) -> slice:
    names = list(PARTS)
    start = sum(PARTS[p] for p in names[:names.index(part)])
    return slice(start, start + PARTS[part])


def _pose(head: np.ndarray, signer: Signer, dominant: np.ndarray, mirror: float, t: int,
          rng: np.random.Generator) -> np.ndarray:
    """33 pose points: upper body around the face, the signing arm reaching the hand."""
    s = signer.face_size / 0.27
    pose = np.zeros((t, 33, 3))
    hx, hy = head[:, 0:1], head[:, 1:2]

    def put(i: int, dx: float, dy: float, z: float = 0.0) -> None:
        pose[:, i, 0] = (hx + dx * s)[:, 0]
        pose[:, i, 1] = (hy + dy * s)[:, 0]
        pose[:, i, 2] = z

    put(0, 0, 0.02, -0.6)
    for i, (dx, dy) in enumerate([(-0.03, -0.04), (-0.05, -0.04), (-0.07, -0.04),
                                  (0.03, -0.04), (0.05, -0.04), (0.07, -0.04),
                                  (-0.12, -0.02), (0.12, -0.02), (-0.04, 0.09), (0.04, 0.09)], start=1):
        put(i, dx, dy, -0.55)
    for left, sign in ((True, 1.0), (False, -1.0)):  # the signer's left appears at larger x
        o = 0 if left else 1
        put(11 + o, sign * 0.2, 0.35, -0.1)
        put(13 + o, sign * 0.26, 0.62, -0.05)
        put(15 + o, sign * 0.24, 0.86, -0.1)
        for j, dx in ((17, 0.02), (19, 0.0), (21, -0.02)):
            put(j + o, sign * (0.24 + dx), 0.9, -0.12)
        put(23 + o, sign * 0.13, 0.95, 0.0)
        put(25 + o, sign * 0.14, 1.35, 0.0)
        put(27 + o, sign * 0.14, 1.75, 0.0)
        put(29 + o, sign * 0.15, 1.82, 0.0)
        put(31 + o, sign * 0.12, 1.86, 0.0)
    # The signing arm: pose wrist at the hand's wrist, elbow below between shoulder and wrist.
    o = 1 if mirror > 0 else 0  # right-handed signs with the right arm (odd = right side... 12/14/16)
    wrist, shoulder = dominant[:, 0, :2], pose[:, 11 + o, :2]
    pose[:, 15 + o, :2] = wrist
    pose[:, 13 + o, :2] = 0.5 * (wrist + shoulder) + np.array([-mirror * 0.04, 0.12])
    for j, lm in ((17, 17), (19, 5), (21, 2)):
        pose[:, j + o, :2] = dominant[:, lm, :2]
    pose[..., 2] += rng.normal(0, 0.02, (1, 33))
    return pose


def _other_hand(rng: np.random.Generator, signer: Signer, t: int, mirror: float,
                pose: np.ndarray) -> np.ndarray:
    """The non-signing hand: resting low, seen in only a few frames (NaN elsewhere)."""
    o = 0 if mirror > 0 else 1  # the other side's pose wrist
    rest = np.array([0.3, 0.3, 0.3, 0.3, 0.1, 0.3, 0.2, 0.2, 0.0, 1.9, 0.0])
    pts = hand_points(rest, signer.hand_size * 0.9) * np.array([-mirror, -1.0, -1.0])
    hand = pts[None] + np.concatenate([pose[:, 15 + o, None, :2], np.zeros((t, 1, 1))], -1)
    if signer.other_hand_rate == 0:
        hand[:] = np.nan
    else:
        hand[_bursts(rng, t, 1 - signer.other_hand_rate, mean_len=12)] = np.nan
    return hand


# --------------------------------------------------------------------------------------------
# Phrases like the competition's: addresses, phone numbers, URLs (and sentences)
# --------------------------------------------------------------------------------------------

_STREETS = ["main", "oak", "pine", "maple", "cedar", "elm", "lake", "hill", "park", "river",
            "sunset", "washington", "lincoln", "jackson", "madison", "franklin", "highland",
            "quincy", "vista", "zephyr", "juniper", "kingsway", "yukon", "willow"]
_SUFFIX = ["street", "st", "avenue", "ave", "road", "rd", "drive", "dr", "lane", "ln", "court",
           "ct", "way", "blvd", "place", "pl", "circle", "parkway"]
_WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "pack", "my", "box",
          "with", "five", "dozen", "liquor", "jugs", "sphinx", "of", "black", "quartz", "judge",
          "vow", "zebra", "mix", "wizard", "joy", "kiwi", "yacht", "quiet", "gym", "fjord"]
_DOMAINS = ["com", "org", "net", "edu", "io", "gov", "co", "us", "info"]
_SITES = ["example", "mysite", "shop", "news", "jazzy", "quizbox", "weblog", "vexed", "kayak"]


def _word(rng: np.random.Generator, pool: list[str]) -> str:
    return pool[int(rng.integers(len(pool)))]


def _digits(rng: np.random.Generator, n: int) -> str:
    return "".join(str(int(d)) for d in rng.integers(0, 10, n))


def make_phrase(rng: np.random.Generator, supplemental: bool = False, charmap: CharacterMap = COMPETITION) -> str:
    """A phrase of 1-31 characters from the competition's alphabet (mean length near 18); for
    another alphabet, words of 2-8 of its tokens, joined by spaces where the map has a space."""
    if not charmap.is_competition:
        letters = [t for t in charmap.tokens if t != " "]
        n_words = int(rng.integers(1, 5)) if " " in charmap.index else 1
        words = ["".join(letters[int(i)] for i in rng.integers(0, len(letters), int(rng.integers(2, 9))))
                 for _ in range(n_words)]
        return " ".join(words)
    if supplemental:
        words = [_word(rng, _WORDS) for _ in range(int(rng.integers(1, 6)))]
        return " ".join(words)[:31].strip() or "a"
    kind = rng.choice(["address", "phone", "url", "email", "odd"], p=[0.35, 0.25, 0.25, 0.1, 0.05])
    if kind == "address":
        p = f"{_digits(rng, int(rng.integers(2, 6)))} {_word(rng, _STREETS)} {_word(rng, _SUFFIX)}"
        if rng.random() < 0.4:
            p += rng.choice([" #", " apt ", " unit "]) + _digits(rng, int(rng.integers(1, 4)))
    elif kind == "phone":
        sep = "-" if rng.random() < 0.7 else "."
        p = sep.join([_digits(rng, 3), _digits(rng, 3), _digits(rng, 4)])
        if rng.random() < 0.3:
            p = f"+{int(rng.integers(1, 99))}-" + p
        elif rng.random() < 0.2:
            p = f"({_digits(rng, 3)}) {_digits(rng, 3)}-{_digits(rng, 4)}"
    elif kind == "url":
        scheme = rng.choice(["https://", "http://", "www.", ""])
        p = f"{scheme}{_word(rng, _SITES)}.{_word(rng, _DOMAINS)}"
        if rng.random() < 0.8:
            p += "/" + rng.choice([_word(rng, _WORDS), "~" + _word(rng, _WORDS),
                                   _word(rng, _WORDS) + "?q=" + _digits(rng, 2),
                                   _word(rng, _WORDS) + "_" + _word(rng, _WORDS)])
    elif kind == "email":
        p = f"{_word(rng, _WORDS)}{_digits(rng, int(rng.integers(0, 3)))}@{_word(rng, _SITES)}.{_word(rng, _DOMAINS)}"
    else:  # the rare characters real phrases use now and then
        rare = "!$%&'()*+,:;=[_~#@?"
        p = "".join(rng.choice(list(rare + "abcdefghij0123456789"), int(rng.integers(4, 22))))
    return p[:31] if len(p) > 31 else p


# --------------------------------------------------------------------------------------------
# Writing the Kaggle layout
# --------------------------------------------------------------------------------------------

CORRUPTION_KINDS = ("no_hand", "wrong_phrase")


@dataclass(frozen=True)
class _Item:
    sequence_id: int
    participant: int
    phrase: str
    corruption: str | None
    seed: int


def _write_parquet(path: Path, items: list[_Item], signers: dict[int, Signer],
                   charmap: CharacterMap = COMPETITION) -> None:
    """One landmark file: index sequence_id, column frame, then the 1,629 landmark columns."""
    templates = character_templates(charmap)
    chunks, seq_ids, frames = [], [], []
    for it in items:
        rng = np.random.default_rng(it.seed)
        signer = signers[it.participant]
        shown = it.phrase
        if it.corruption == "wrong_phrase":
            while shown == it.phrase:
                shown = make_phrase(rng, charmap=charmap)
        xyz = render(shown, signer, rng, charmap, templates)
        if it.corruption == "no_hand":
            keep = rng.choice(len(xyz), size=min(len(xyz), int(rng.integers(0, 4))), replace=False)
            lost = np.ones(len(xyz), bool)
            lost[keep] = False
            for hand in ("right_hand", "left_hand"):
                xyz[lost, _part_slice(hand)] = np.nan
        chunks.append(xyz)
        seq_ids.append(np.full(len(xyz), it.sequence_id, np.int64))
        frames.append(np.arange(len(xyz), dtype=np.int16))
    xyz = np.concatenate(chunks)                               # (rows, 543, 3)
    columns = np.ascontiguousarray(xyz.transpose(2, 1, 0)).reshape(-1, len(xyz))  # x..., y..., z...
    arrays = [pa.array(np.concatenate(frames))]
    arrays += [pa.array(col) for col in columns]
    arrays.append(pa.array(np.concatenate(seq_ids)))
    names = ["frame"] + LANDMARK_COLUMNS + ["sequence_id"]
    types = ["int16"] + ["float32"] * len(LANDMARK_COLUMNS) + ["int64"]
    pandas_meta = {"index_columns": ["sequence_id"], "column_indexes": [],
                   "columns": [{"name": n, "field_name": n, "pandas_type": t, "numpy_type": t,
                                "metadata": None} for n, t in zip(names, types)],
                   "pandas_version": "2.0.3", "creator": {"library": "aslfr"}}
    table = pa.Table.from_arrays(arrays, names=names).replace_schema_metadata(
        {b"pandas": json.dumps(pandas_meta).encode()})
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp, row_group_size=50_000, compression="snappy", write_statistics=False)
    os.replace(tmp, path)


def _write_part(args: tuple[Path, list[_Item], dict[int, Signer], CharacterMap]) -> None:
    _write_parquet(*args)


def synthesize(out_dir: str | Path, sequences: int = 1000, participants: int = 10, files: int = 1,
               seed: int = 0, corrupt_fraction: float = 0.05, supplemental: int = 0,
               workers: int = 1, progress: bool = True, characters: CharacterMap | None = None) -> dict[str, int]:
    """Write a Kaggle-layout dataset to `out_dir` (phrases and hand shapes of `characters`,
    default the competition's map) and return counts."""
    charmap = characters or COMPETITION
    from tqdm import tqdm

    if sequences < 1 or participants < 1 or files < 1 or supplemental < 0:
        raise ValueError(f"--sequences {sequences} --participants {participants} --files {files} --supplemental "
                         f"{supplemental}: sequences, participants and files must be at least 1, supplemental at least 0")
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--workers {workers}: expected a whole number of processes, at least 1")
    if files > sequences:
        raise ValueError(f"--files {files}: more files than --sequences {sequences}; every file needs a sequence")
    if not 0 <= corrupt_fraction < 1:
        raise ValueError(f"corrupt fraction {corrupt_fraction} is not in [0, 1)")
    out = Path(out_dir)
    settings = {"sequences": sequences, "participants": participants, "files": files, "seed": seed,
                "corrupt_fraction": corrupt_fraction, "supplemental": supplemental, "characters": list(charmap.tokens)}
    _check_rerun(out, settings)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    participant_ids = sorted(rng.choice(np.arange(1, 300), participants, replace=False).tolist())
    signers = {p: make_signer(np.random.default_rng([seed, p])) for p in participant_ids}

    def plan(n: int, n_files: int, supp: bool) -> tuple[list[int], list[list[_Item]]]:
        file_ids = sorted((10**6 + rng.choice(2 * 10**9, n_files, replace=False)).tolist())
        seq_ids = (10**6 + rng.choice(2 * 10**9, n, replace=False)).tolist()
        parts = rng.choice(participant_ids, n).tolist()
        corrupt = rng.random(n) < (0.0 if supp else corrupt_fraction)
        kinds = rng.choice(CORRUPTION_KINDS, n)
        groups: list[list[_Item]] = [[] for _ in range(n_files)]
        for i in range(n):
            item = _Item(int(seq_ids[i]), int(parts[i]), make_phrase(rng, supp, charmap),
                         str(kinds[i]) if corrupt[i] else None, int(rng.integers(2**63)))
            groups[i % n_files].append(item)
        return file_ids, groups

    jobs, rows = [], {"train": [], "supplemental": []}
    n_supp_files = max(1, round(files * supplemental / sequences)) if supplemental else 0
    for name, n, n_files, supp in (("train", sequences, files, False),
                                   ("supplemental", supplemental, n_supp_files, True)):
        if n == 0:
            continue
        folder = "train_landmarks" if name == "train" else "supplemental_landmarks"
        (out / folder).mkdir(exist_ok=True)
        file_ids, groups = plan(n, n_files, supp)
        for fid, items in zip(file_ids, groups):
            jobs.append((out / folder / f"{fid}.parquet", items, signers, charmap))
            rows[name] += [(f"{folder}/{fid}.parquet", fid, it.sequence_id, it.participant,
                            it.phrase, it.corruption) for it in items]

    with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) if workers > 1 else _Inline() as pool:
        list(tqdm(pool.map(_write_part, jobs), total=len(jobs), desc="synth files",
                  disable=not progress))

    header = ["path", "file_id", "sequence_id", "participant_id", "phrase"]
    for name, fname in (("train", "train.csv"), ("supplemental", "supplemental_metadata.csv")):
        if rows[name]:
            write_csv(out / fname, header, [r[:5] for r in rows[name]])
    write_csv(out / "corruptions.csv", ["sequence_id", "kind"],
               [(r[2], r[5]) for r in rows["train"] if r[5]])
    if charmap.is_competition:  # byte for byte as before
        (out / "character_to_prediction_index.json").write_text(json.dumps(CHAR_TO_INDEX, indent=1))
    else:
        charmap.save(out / "character_to_prediction_index.json")
    write_json(out / SETTINGS_FILE, settings)
    return {"sequences": sequences, "supplemental": supplemental, "files": len(jobs),
            "corrupt": sum(1 for r in rows["train"] if r[5])}


SETTINGS_FILE = "synth.json"  # what a synthetic dataset was made with


def _check_rerun(out: Path, settings: dict) -> None:
    """A rerun into a dataset `synth` made with the same settings writes the same files again;
    anything else already there (another synthetic dataset, a real one) is refused, naming what
    differs, before a file is touched: its old parquet files would otherwise stay beside the new
    train.csv."""
    made = out / SETTINGS_FILE
    if made.is_file():
        try:
            old = json.loads(made.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            old = None
        if not isinstance(old, dict):
            raise ValueError(f"{made}: unreadable; synthesise into a new directory, or delete {out}")
        differs = [f"{k} {old.get(k)!r} -> {v!r}" for k, v in settings.items() if old.get(k) != v]
        if differs:
            raise ValueError(f"{out}: holds a synthetic dataset made with other settings ({'; '.join(differs)}); "
                             f"synthesise into another directory, or delete {out}")
        return
    found = [name for name in ("train.csv", "train_landmarks", "supplemental_metadata.csv", "supplemental_landmarks")
             if (out / name).exists()]
    if found:
        raise ValueError(f"{out}: already holds a dataset ({', '.join(found)}) that 'aslfr synth' did not make; "
                         f"synthesise into an empty or new directory")


class _Inline:
    """A stand-in for a process pool that runs jobs in this process."""

    def __enter__(self) -> "_Inline":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn, items):  # noqa: ANN001 - mirrors Executor.map
        return map(fn, items)
