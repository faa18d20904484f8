"""The prepare-time statistics kernel against the feature code that training and export use."""

from __future__ import annotations

import numpy as np
import torch

from aslfr.data.moments import FeatureMoments, sequence_sums
from aslfr.data.shards import to_blocks
from aslfr.features import landmark_features, rows_to_coords
from aslfr.landmarks import CENTRE_POINT, N_SELECTED


def _sequences(rng: np.random.Generator) -> list[np.ndarray]:
    seqs = []
    for t in (1, 2, 3, 17, 60, 140):
        rows = (0.5 + 0.2 * rng.standard_normal((t, 2 * N_SELECTED))).astype(np.float32)
        hand_gone = rng.random(t) < 0.3                    # whole hands not detected
        rows[hand_gone, :21] = np.nan
        rows[hand_gone, N_SELECTED:N_SELECTED + 21] = np.nan
        rows[rng.random(rows.shape) < 0.05] = np.nan        # single points missing
        seqs.append(rows)
    no_lip = seqs[4].copy()                                  # centre landmark never seen: centre 0.5
    no_lip[:, [CENTRE_POINT, N_SELECTED + CENTRE_POINT]] = np.nan
    seqs.append(no_lip)
    one_point = np.full((5, 2 * N_SELECTED), np.nan, np.float32)  # only the centre point: scale 0
    one_point[:, [CENTRE_POINT, N_SELECTED + CENTRE_POINT]] = 0.3
    seqs.append(one_point)
    y_only = seqs[3].copy()                                  # an axis with nothing detected
    y_only[:, :N_SELECTED] = np.nan
    seqs.append(y_only)
    return seqs


def _reference(seqs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    feats = np.concatenate([landmark_features(rows_to_coords(torch.from_numpy(s))).double().numpy()
                            for s in seqs])
    ok = np.isfinite(feats)
    f = np.where(ok, feats, 0.0)
    return ok.sum(0).astype(np.float64), f.sum(0), (f * f).sum(0)


def _moments(seqs: list[np.ndarray], threads: int = 1) -> FeatureMoments:
    values = to_blocks(seqs)
    lengths = np.array([len(s) for s in seqs])
    m = FeatureMoments()
    m.add_sums(sequence_sums(values, np.cumsum(lengths) - lengths, lengths, threads), lengths)
    return m


def test_moments_equal_those_of_the_features() -> None:
    seqs = _sequences(np.random.default_rng(0))
    count, total, total_sq = _reference(seqs)
    m = _moments(seqs)
    np.testing.assert_array_equal(m.count, count)
    scale = np.sqrt(count)  # sums of n values of order 1: compare at float32 rounding of each value
    np.testing.assert_allclose(m.total, total, rtol=1e-5, atol=1e-5 * scale.max())
    np.testing.assert_allclose(m.total_sq, total_sq, rtol=1e-5)
    mean, std = m.mean_std()
    ref = FeatureMoments()
    ref.count, ref.total, ref.total_sq = count, total, total_sq
    ref_mean, ref_std = ref.mean_std()
    np.testing.assert_allclose(mean, ref_mean, atol=1e-5)
    np.testing.assert_allclose(std, ref_std, rtol=1e-5)


def test_splitting_over_threads_does_not_change_the_numbers() -> None:
    seqs = _sequences(np.random.default_rng(1))
    one = _moments(seqs, threads=1)
    two = _moments(seqs, threads=2)
    for a, b in ((one.count, two.count), (one.total, two.total), (one.total_sq, two.total_sq)):
        assert np.array_equal(a, b)


def test_sequences_in_any_order_give_the_same_sums() -> None:
    seqs = _sequences(np.random.default_rng(4))
    values = to_blocks(seqs)
    lengths = np.array([len(s) for s in seqs])
    starts = np.cumsum(lengths) - lengths
    order = np.random.default_rng(5).permutation(len(seqs))  # a csv listing another order
    np.testing.assert_array_equal(sequence_sums(values, starts[order], lengths[order]),
                                  sequence_sums(values, starts, lengths)[order])


def test_counts_give_the_hand_frames_and_empty_sequences() -> None:
    seqs = _sequences(np.random.default_rng(3))
    seqs.append(np.full((4, 2 * N_SELECTED), np.nan, np.float32))
    values = to_blocks(seqs)
    lengths = np.array([len(s) for s in seqs])
    sums = sequence_sums(values, np.cumsum(lengths) - lengths, lengths)
    for s, row in zip(seqs, sums):
        np.testing.assert_array_equal(row[0], np.count_nonzero(~np.isnan(s), 0))
    assert sums[-1, 0].sum() == 0


def test_raw_sums_equal_numpys_in_float64() -> None:
    """The compiled sums (reordered so that they vectorise) against a plain float64 reference:
    count, sum and sum of squares of the values and of their float32 1- and 2-frame differences,
    NaN where either end is NaN."""
    seqs = _sequences(np.random.default_rng(6))
    lengths = np.array([len(s) for s in seqs])
    sums = sequence_sums(to_blocks(seqs), np.cumsum(lengths) - lengths, lengths, threads=2)
    for s, got in zip(seqs, sums):
        for k, x in enumerate((s, s[1:] - s[:-1], s[2:] - s[:-2])):
            ok = ~np.isnan(x)
            v = np.where(ok, x, 0).astype(np.float64)
            np.testing.assert_array_equal(got[3 * k], ok.sum(0))
            np.testing.assert_allclose(got[3 * k + 1], v.sum(0), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(got[3 * k + 2], (v * v).sum(0), rtol=1e-12, atol=1e-12)
