from pathlib import Path

import numpy as np
import pytest
import torch

from aslfr.features import landmark_features, resize_time, sample_features
from aslfr.landmarks import NODE_ORDER, SELECTED_COLUMNS

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "seed_features_reference.npz"


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    return dict(np.load(FIXTURE))


@pytest.mark.parametrize("case", ["short", "long", "one_frame", "two_frames"])
def test_features_match_the_tensorflow_reference(ref: dict, case: str) -> None:
    out = sample_features(torch.from_numpy(ref[f"{case}_coords"]), torch.from_numpy(ref["global_mean"]),
                          torch.from_numpy(ref["global_std"]), int(ref[f"{case}_max_len"])).numpy()
    assert out.shape == ref[f"{case}_features"].shape
    np.testing.assert_allclose(out, ref[f"{case}_features"], rtol=1e-5, atol=5e-5)


def test_node_order_matches_the_reference(ref: dict) -> None:
    assert np.array_equal(NODE_ORDER, ref["node_order"])
    assert len(SELECTED_COLUMNS) == 200 and SELECTED_COLUMNS[0] == "x_right_hand_0"


def test_resize_keeps_a_nan_neighbour_out_when_its_weight_is_zero() -> None:
    x = torch.tensor([[0.0], [1.0], [float("nan")], [3.0]])
    out = resize_time(x, 2)  # positions 0.5 and 2.5: both interpolate
    assert torch.isclose(out[0], torch.tensor([0.5]))
    assert torch.isnan(out[1])
    # 3 frames -> 1: the output sits exactly on frame 1, so the NaN frame 2 has weight 0
    exact = resize_time(torch.tensor([[0.0], [1.0], [float("nan")]]), 1)
    assert exact.tolist() == [[1.0]]


def test_motion_channels_zero_at_the_end_and_nan_where_frames_are_missing(ref: dict) -> None:
    f = landmark_features(torch.from_numpy(ref["short_coords"])).reshape(-1, 100, 6)
    assert torch.all(f[-1, :, 2:4] == 0) and torch.all(f[-2:, :, 4:6] == 0)
    assert torch.isnan(f[3]).all()  # frame 3 is all NaN in the fixture
