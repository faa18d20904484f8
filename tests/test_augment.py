import numpy as np
import pytest

from aslfr.augment import affine, augment, flip, resample, spatial_mask, temporal_mask
from aslfr.landmarks import FLIP_PERMUTATION, LEFT_LIP, LEFT_POSE, RIGHT_LIP, RIGHT_POSE, SELECTED_LANDMARKS


def _coords(t: int = 50, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.1, 0.9, (t, 100, 2)).astype(np.float32)
    x[5:9, 21:42] = np.nan
    return x


def test_flip_swaps_exactly_the_listed_pairs() -> None:
    pairs = {("right_hand", i): ("left_hand", i) for i in range(21)}
    pairs.update({("face", a): ("face", b) for a, b in zip(LEFT_LIP, RIGHT_LIP)})
    pairs[("face", 98)] = ("face", 327)
    pairs.update({("pose", a): ("pose", b) for a, b in zip(LEFT_POSE, RIGHT_POSE)})
    pairs.update({v: k for k, v in list(pairs.items())})
    for k, landmark in enumerate(SELECTED_LANDMARKS):
        assert SELECTED_LANDMARKS[FLIP_PERMUTATION[k]] == pairs.get(landmark, landmark)
    assert sum(FLIP_PERMUTATION != np.arange(100)) == 2 * (21 + 18 + 1 + 7)
    x = _coords()
    y = flip(x)
    np.testing.assert_allclose(y[:, 0, 0], 1 - x[:, 21, 0])
    np.testing.assert_array_equal(y[:, 0, 1], x[:, 21, 1])
    np.testing.assert_allclose(flip(y), x, atol=1e-6)


def test_affine_keeps_nan_as_nan_and_moves_everything_else() -> None:
    x = _coords()
    y = affine(x, np.random.default_rng(1))
    assert np.array_equal(np.isnan(x), np.isnan(y))
    assert not np.allclose(np.nan_to_num(x), np.nan_to_num(y))


def test_affine_with_identity_ranges_is_the_identity() -> None:
    x = _coords()
    y = affine(x, np.random.default_rng(1), scale=(1, 1), shear=(0, 0), degrees=(0, 0), shift=(0, 0))
    np.testing.assert_allclose(y, x, atol=1e-6)


def test_rotation_is_about_the_image_centre() -> None:
    x = np.full((1, 100, 2), 0.5, np.float32)
    y = affine(x, np.random.default_rng(2), scale=(1, 1), shear=(0, 0), shift=(0, 0))
    np.testing.assert_allclose(y, x, atol=1e-6)


@pytest.mark.parametrize("seed", range(5))
def test_temporal_mask_blanks_20_to_40_percent_of_frames(seed: int) -> None:
    x = _coords(100)
    y = temporal_mask(x, np.random.default_rng(seed))
    blank = np.isnan(y).all(axis=(1, 2))
    assert 20 <= blank.sum() <= 40
    idx = np.flatnonzero(blank)
    gaps = np.diff(idx)
    assert (gaps != 1).sum() <= 1  # one window, possibly wrapping around the end


def test_spatial_mask_blanks_the_landmarks_inside_one_box() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (200, 100, 2)).astype(np.float32)
    shares = []
    for seed in range(20):
        y = spatial_mask(x, np.random.default_rng(seed))
        gone = np.isnan(y[..., 0])
        assert np.array_equal(gone, np.isnan(y[..., 1]))
        shares.append(gone.mean())
    # a box of U(0.2, 0.4) per side over uniform points blanks 0.04 to 0.16 of them (0.09 on average)
    assert 0.06 < np.mean(shares) < 0.12 and max(shares) < 0.2 and min(shares) > 0.02


def test_resample_changes_length_within_the_rate_range() -> None:
    x = _coords(100)
    lengths = {len(resample(x, np.random.default_rng(s))) for s in range(30)}
    assert min(lengths) >= 50 and max(lengths) <= 150 and len(lengths) > 10
    assert len(resample(x[:1], np.random.default_rng(0))) >= 1


def test_augment_is_a_pure_function_of_its_generator() -> None:
    x = _coords()
    a = augment(x, np.random.default_rng([42, 3, 17]))
    b = augment(x, np.random.default_rng([42, 3, 17]))
    np.testing.assert_array_equal(a, b)
