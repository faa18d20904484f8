import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from aslfr.cli import main
from aslfr.data.kaggle import DataError, read_landmarks, read_sequence_blocks, sequence_runs
from aslfr.data.prepare import prepare
from aslfr.data.shards import METADATA_FIELDS, ShardDataset, block_rows
from aslfr.data.tfrecords import encode_example, read_seed_file, write_records
from aslfr.features import landmark_features, rows_to_coords
from aslfr.landmarks import SELECTED_COLUMNS
from aslfr.vocab import encode

from conftest import write_csv


def _csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _copy(synth_dir: Path, tmp: Path) -> Path:
    dst = tmp / "data"
    shutil.copytree(synth_dir, dst)
    return dst


def _first_parquet(data: Path) -> Path:
    return data / _csv(data / "train.csv")[0]["path"]


def test_metadata_and_o1_access_match_the_source(synth_dir: Path, prepared_dir: Path) -> None:
    ds = ShardDataset(prepared_dir)
    listed = _csv(synth_dir / "train.csv")
    assert len(ds) == len(listed)
    table = pq.read_table(prepared_dir / "metadata.parquet")
    assert set(METADATA_FIELDS) <= set(table.column_names)
    i = len(ds) // 2
    sid = int(ds.meta["sequence_id"][i])
    row = next(r for r in listed if int(r["sequence_id"]) == sid)
    src = pq.read_table(synth_dir / row["path"], columns=["sequence_id", *SELECTED_COLUMNS])
    src = src.filter(pc.equal(src.column("sequence_id"), sid))
    expect = np.stack([src.column(c).to_numpy() for c in SELECTED_COLUMNS], 1)
    np.testing.assert_array_equal(ds.rows(i), expect)
    assert ds.phrases[i] == row["phrase"] and int(ds.meta["participant_id"][i]) == int(row["participant_id"])
    assert ds.meta["n_frames"][i] == len(expect)
    assert ds.meta["n_right_hand_frames"][i] == np.count_nonzero(~np.isnan(expect[:, 0]))
    assert ds.meta["n_left_hand_frames"][i] == np.count_nonzero(~np.isnan(expect[:, 21]))
    assert ds.coords(i).shape == (len(expect), 100, 2)
    assert np.array_equal(ds.coords(i)[:, :, 0], expect[:, :100], equal_nan=True)
    assert np.array_equal(ds.coords(i)[:, :, 1], expect[:, 100:], equal_nan=True)
    assert ds.coords(i).flags.c_contiguous and ds.coords(i).dtype == np.float32


def test_stats_are_the_nan_aware_moments_of_the_features(prepared_dir: Path) -> None:
    ds = ShardDataset(prepared_dir)
    mean, std = ds.stats()
    assert mean.shape == std.shape == (600,)
    feats = np.concatenate([landmark_features(rows_to_coords(torch.from_numpy(ds.rows(i)))).double().numpy()
                            for i in range(len(ds))])
    np.testing.assert_allclose(mean, np.nanmean(feats, 0), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(std, np.nanstd(feats, 0), rtol=1e-4, atol=1e-5)


def test_supplemental_is_prepared_on_request_but_not_in_stats(synth_dir: Path, prepared_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "p"
    summary = prepare(synth_dir, out, supplemental=True, progress=False)
    assert summary["sequences"] == 80 + 12
    sources = pq.read_table(out / "metadata.parquet").column("source").to_pylist()
    assert sources.count("supplemental") == 12
    a, b = np.load(out / "stats.npz"), np.load(prepared_dir / "stats.npz")
    assert np.array_equal(a["mean"], b["mean"])


def test_rerun_resumes_and_gives_the_same_files(synth_dir: Path, prepared_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "p"
    shutil.copytree(prepared_dir, out)
    shards = sorted((out / "shards").glob("*.done.json"))
    first = shards[0].name.split(".")[0]
    # A file cut off half-way: no done marker, a stale temporary left behind.
    shards[0].unlink()
    (out / "shards" / f"{first}.npy").write_bytes(b"partial")
    (out / "shards" / f".{first}.npy.tmp").write_bytes(b"junk")
    other = shards[1]
    mtime = other.stat().st_mtime_ns
    prepare(synth_dir, out, progress=False)
    assert other.stat().st_mtime_ns == mtime  # the finished file was not redone
    for name in ("metadata.parquet", "stats.npz"):
        assert (out / name).read_bytes() == (prepared_dir / name).read_bytes()
    assert (out / "shards" / f"{first}.npy").read_bytes() == (prepared_dir / "shards" / f"{first}.npy").read_bytes()


def test_shards_of_the_earlier_row_major_layout_still_read(prepared_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "p"
    shutil.copytree(prepared_dir, out)
    new, old = ShardDataset(prepared_dir), ShardDataset(out)
    for file_id in np.unique(new.meta["file_id"]):
        mine = np.flatnonzero(new.meta["file_id"] == file_id)
        rows = np.zeros((int(max(new.meta["offset"][mine] + new.meta["n_frames"][mine])), 200), np.float32)
        for i in mine:
            rows[new.meta["offset"][i]:new.meta["offset"][i] + new.meta["n_frames"][i]] = new.rows(i)
        np.save(out / "shards" / f"{file_id}.npy", rows)
    for i in range(0, len(new), 7):
        np.testing.assert_array_equal(old.rows(i), new.rows(i))
        np.testing.assert_array_equal(old.coords(i), new.coords(i))


def test_two_workers_give_the_same_files(synth_dir: Path, prepared_dir: Path, tmp_path: Path) -> None:
    prepare(synth_dir, tmp_path / "p", workers=2, progress=False)
    for name in ("metadata.parquet", "stats.npz"):
        assert (tmp_path / "p" / name).read_bytes() == (prepared_dir / name).read_bytes()


def test_seed_tfrecords_prepare_like_the_parquet_files(prepared_dir: Path, tmp_path: Path) -> None:
    ds = ShardDataset(prepared_dir)
    rec_dir = tmp_path / "records"
    rec_dir.mkdir()
    groups: dict[int, list[int]] = {}
    for i in range(len(ds)):
        groups.setdefault(int(ds.meta["file_id"][i]), []).append(i)
    for file_id, idx in groups.items():
        payloads = []
        for n, i in enumerate(idx):
            ints = {"sequence_id": [int(ds.meta["sequence_id"][i])]} if n % 2 == 0 else None
            payloads.append(encode_example({"frames": ds.rows(i).ravel(),
                                            "phrase": encode(ds.phrases[i]).astype(np.float32)}, ints))
        write_records(rec_dir / f"{file_id}.tfrecord", payloads)
    out = tmp_path / "from_records"
    summary = prepare(rec_dir, out, progress=False)
    assert summary["sequences"] == len(ds)
    got = ShardDataset(out)
    assert got.phrases == ds.phrases
    np.testing.assert_array_equal(got.rows(3), ds.rows(3))
    assert int(got.meta["sequence_id"][0]) == int(ds.meta["sequence_id"][0])
    assert int(got.meta["sequence_id"][1]) == int(ds.meta["file_id"][1]) * 100_000 + 1  # derived id
    np.testing.assert_allclose(got.stats()[0], ds.stats()[0], rtol=1e-5, atol=1e-6)


def test_corrupt_tfrecord_names_the_file_and_record(tmp_path: Path) -> None:
    path = tmp_path / "7.tfrecord"
    write_records(path, [encode_example({"frames": np.zeros(400), "phrase": np.array([1.0])})] * 2)
    assert len(read_seed_file(path, 7)) == 2
    import gzip
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-10]))
    with pytest.raises(ValueError, match=r"7\.tfrecord: record 1"):
        read_seed_file(path, 7)


# --- bad input ----------------------------------------------------------------------------------

def _expect_error(data: Path, out: Path, match: str) -> None:
    with pytest.raises(DataError, match=match):
        prepare(data, out, progress=False)
    assert not (out / "metadata.parquet").exists()


def test_missing_train_csv(synth_dir: Path, tmp_path: Path) -> None:
    data = _copy(synth_dir, tmp_path)
    (data / "train.csv").unlink()
    _expect_error(data, tmp_path / "out", r"train\.csv: metadata file not found")


def test_missing_parquet_file(synth_dir: Path, tmp_path: Path) -> None:
    data = _copy(synth_dir, tmp_path)
    _first_parquet(data).unlink()
    _expect_error(data, tmp_path / "out", r"\.parquet: landmark file .* is missing \(1 of 2")


def test_missing_csv_column(synth_dir: Path, tmp_path: Path) -> None:
    data = _copy(synth_dir, tmp_path)
    rows = _csv(data / "train.csv")
    write_csv(data / "train.csv", [{k: v for k, v in r.items() if k != "phrase"} for r in rows])
    _expect_error(data, tmp_path / "out", "missing column.*phrase")


@pytest.mark.parametrize("change, match", [
    ("drop", "missing landmark column.*x_right_hand_5"),
    ("rename", "missing landmark column.*x_right_hand_5"),
    ("dtype", "x_right_hand_5 has type string, expected float32"),
])
def test_bad_landmark_columns(synth_dir: Path, tmp_path: Path, change: str, match: str) -> None:
    data = _copy(synth_dir, tmp_path)
    path = _first_parquet(data)
    table = pq.read_table(path)
    i = table.column_names.index("x_right_hand_5")
    if change == "drop":
        table = table.remove_column(i)
    elif change == "rename":
        table = table.rename_columns([("X_RIGHT_HAND_5" if n == "x_right_hand_5" else n) for n in table.column_names])
    else:
        table = table.set_column(i, "x_right_hand_5", pa.array(["0.5"] * table.num_rows))
    pq.write_table(table, path)
    _expect_error(data, tmp_path / "out", match)


def test_truncated_parquet(synth_dir: Path, tmp_path: Path) -> None:
    data = _copy(synth_dir, tmp_path)
    path = _first_parquet(data)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    _expect_error(data, tmp_path / "out", f"{path.name}: not a readable parquet file")


def test_corrupt_parquet_body_leaves_no_partial_output(synth_dir: Path, tmp_path: Path) -> None:
    data = _copy(synth_dir, tmp_path)
    path = _first_parquet(data)
    raw = bytearray(path.read_bytes())
    raw[4:len(raw) // 2] = b"\x00" * (len(raw) // 2 - 4)   # footer intact, pages destroyed
    path.write_bytes(bytes(raw))
    out = tmp_path / "out"
    _expect_error(data, out, f"{path.name}: cannot read landmarks")
    file_id = path.stem
    assert not list((out / "shards").glob(f"{file_id}.*"))
    assert not list((out / "shards").glob(f".{file_id}*"))


def test_sequences_missing_on_either_side_and_bad_phrases_are_counted_skips(synth_dir: Path, tmp_path: Path) -> None:
    data = _copy(synth_dir, tmp_path)
    rows = _csv(data / "train.csv")
    gone_from_csv = rows.pop(0)                        # in the parquet, not in the csv
    rows[0]["phrase"] = "Hello World"                  # capitals are not in the map
    rows.append({**rows[1], "sequence_id": "123"})     # in the csv, not in the parquet
    # An all-NaN sequence: overwrite one sequence's landmark values with NaN.
    path = data / rows[2]["path"]
    table = pq.read_table(path)
    hit = pc.equal(table.column("sequence_id"), int(rows[2]["sequence_id"])).to_numpy(zero_copy_only=False)
    cols = []
    for name in table.column_names:
        col = table.column(name)
        if name not in ("frame", "sequence_id"):
            col = pa.array(np.where(hit, np.nan, col.to_numpy()).astype(np.float32))
        cols.append(col)
    pq.write_table(pa.Table.from_arrays(cols, names=table.column_names), path)
    write_csv(data / "train.csv", rows)
    summary = prepare(data, tmp_path / "out", progress=False)
    assert summary["skipped"] == {"unknown_characters": 1, "missing_in_parquet": 1, "not_in_csv": 1, "all_nan": 1}
    assert summary["sequences"] == len(rows) - 3
    ids = set(pq.read_table(tmp_path / "out" / "metadata.parquet").column("sequence_id").to_pylist())
    assert int(gone_from_csv["sequence_id"]) not in ids and 123 not in ids
    # the skipped sequences' rows stay in the shard, unreferenced: every kept one still reads back
    ds = ShardDataset(tmp_path / "out")
    source = pq.read_table(path, columns=["sequence_id", *SELECTED_COLUMNS])
    source_ids = source.column("sequence_id").to_numpy()
    source_rows = np.stack([source.column(c).to_numpy() for c in SELECTED_COLUMNS], 1)
    for i in range(len(ds)):
        if ds.meta["file_id"][i] == int(rows[2]["file_id"]):
            expect = source_rows[source_ids == ds.meta["sequence_id"][i]]
            assert np.array_equal(ds.rows(i), expect, equal_nan=True)


@pytest.mark.parametrize("layout", ["row groups", "one row group", "float64 with nulls, shuffled"])
def test_read_landmarks_gives_each_sequence_one_block_whatever_the_file_layout(synth_dir: Path, tmp_path: Path,
                                                                      layout: str) -> None:
    table = pq.read_table(_first_parquet(synth_dir), columns=["sequence_id", "frame", *SELECTED_COLUMNS])
    seq = table.column("sequence_id").to_numpy()
    expect = np.stack([table.column(c).to_numpy() for c in SELECTED_COLUMNS], 1)
    path = tmp_path / "f.parquet"
    if layout == "row groups":
        pq.write_table(table, path, row_group_size=997)
    elif layout == "one row group":
        pq.write_table(table, path)
    else:
        gone = np.zeros(len(expect), bool)
        gone[::7] = True
        cols = [table.column(0), table.column(1)]
        cols += [pa.array(expect[:, j].astype(np.float64), mask=gone) for j in range(len(SELECTED_COLUMNS))]
        expect = np.where(gone[:, None], np.nan, expect)
        order = np.random.default_rng(0).permutation(len(expect))
        shuffled = pa.Table.from_arrays(cols, names=table.column_names).take(order)
        pq.write_table(shuffled, path, row_group_size=1500)
    assert (pq.ParquetFile(path).metadata.num_row_groups > 1) == (layout != "one row group")
    got_seq, got_frame, values = read_landmarks(path, threads=2)
    assert values.dtype == np.float32 and values.flags.c_contiguous
    frame = table.column("frame").to_numpy()
    # grouped files keep their order (the synthetic ones list sequences in generation order)
    order = np.lexsort((frame, seq)) if layout.endswith("shuffled") else np.arange(len(seq))
    np.testing.assert_array_equal(got_seq, seq[order])
    np.testing.assert_array_equal(got_frame, frame[order])
    np.testing.assert_array_equal(values, expect[order].astype(np.float32))
    # the shard layout: the same rows as sequence blocks, sequences cut by row groups included
    read = read_sequence_blocks(path, threads=2)
    ids, starts, lengths = sequence_runs(got_seq)
    np.testing.assert_array_equal(read.sequence_ids, ids)
    np.testing.assert_array_equal(read.starts, starts)
    np.testing.assert_array_equal(read.lengths, lengths)
    assert read.blocks.dtype == np.float32 and read.blocks.shape == (values.size,)
    for a, n in zip(starts, lengths):
        np.testing.assert_array_equal(block_rows(read.blocks, a, n), values[a:a + n])


def test_unwritable_output_directory(synth_dir: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(DataError, match="a-file/out: output directory is not writable"):
        prepare(synth_dir, blocker / "out", progress=False)


def test_cli_reports_bad_input_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["prepare", str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "nowhere: data directory not found" in err and "Traceback" not in err


def test_prepare_with_other_options_into_a_prepared_directory_is_refused(synth_dir: Path, prepared_dir: Path,
                                                                         tmp_path: Path) -> None:
    """--supplemental into a directory prepared without it would rewrite metadata.parquet under
    the runs trained on it: refused, nothing rewritten; the same with a directory from before
    options.json, told by its shards."""
    out = tmp_path / "p"
    shutil.copytree(prepared_dir, out)
    before = (out / "metadata.parquet").read_bytes()
    assert json.loads((out / "options.json").read_text()) == {"supplemental": False}
    with pytest.raises(DataError, match="was prepared without --supplemental"):
        prepare(synth_dir, out, supplemental=True, progress=False)
    (out / "options.json").unlink()
    with pytest.raises(DataError, match="was prepared without --supplemental"):
        prepare(synth_dir, out, supplemental=True, progress=False)
    assert (out / "metadata.parquet").read_bytes() == before


def test_an_infinite_landmark_value_is_named_before_the_statistics(synth_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    path = sorted((data / "train_landmarks").glob("*.parquet"))[0]
    table = pq.read_table(path)
    column = "x_right_hand_3"
    values = table.column(column).to_numpy(zero_copy_only=False).copy()
    row = int(np.flatnonzero(~np.isnan(values))[0])
    values[row] = np.inf
    sid = int(table.column("sequence_id").to_numpy()[row])
    pq.write_table(table.set_column(table.column_names.index(column), column, pa.array(values)), path)
    with pytest.raises(DataError, match=rf"{path.name}: sequence_id {sid} has an infinite value in column {column}"):
        prepare(data, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "stats.npz").exists()

