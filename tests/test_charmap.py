"""Your own alphabet: a character map other than the competition's travels from the synthetic
data through prepare, train, the checkpoint, ONNX, TFLite and submission.zip to the decoders."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from aslfr.config import preset
from aslfr.data.kaggle import DataError
from aslfr.data.prepare import prepare
from aslfr.data.shards import ShardDataset
from aslfr.data.synthetic import synthesize
from aslfr.export import export
from aslfr.recognizer import Recognizer
from aslfr.checkpoints import TrainingError, load_model
from aslfr.train import train
from aslfr.vocab import COMPETITION, CharacterMap

from conftest import TINY

#: Fewer classes than the competition's, letters outside ASCII, a multi-letter sign and a space.
SMALL = {"a": 0, "ä": 1, "b": 2, "ö": 3, "ü": 4, "sch": 5, " ": 6, "ß": 7}
#: More classes than the competition's: its characters and eleven Korean letters.
LARGE = {**{c: i for i, c in enumerate(COMPETITION.tokens)},
         **{c: 59 + i for i, c in enumerate("ㄱㄴㄷㄹㅁㅂㅅㅇㅈㅊㅋ")}}


def test_phrases_split_by_the_longest_token_and_unknown_characters_are_named() -> None:
    cm = CharacterMap.from_mapping(SMALL)
    assert cm.decode(cm.encode("schaä sch")) == "schaä sch" and cm.encode("sch").tolist() == [5]
    assert (cm.blank, cm.n_classes) == (8, 9)
    assert cm.unknown("abc") == "c"
    with pytest.raises(ValueError, match="character 'x' is not in the character map"):
        cm.encode("ax")
    for bad, says in (({"a": 0, "b": 2}, "indices must be the whole numbers 0 to 1"), ([], "JSON object"),
                      ({"": 0}, "non-empty string")):
        with pytest.raises(ValueError, match=says):
            CharacterMap.from_mapping(bad)


def _dataset(root: Path, mapping: dict, seed: int) -> tuple[Path, Path]:
    (root / "map.json").write_text(json.dumps(mapping, ensure_ascii=False), encoding="utf-8")
    data, prepared = root / "data", root / "prepared"
    synthesize(data, sequences=60, participants=4, files=2, seed=seed, progress=False,
               characters=CharacterMap.load(root / "map.json"))
    prepare(data, prepared, progress=False, characters=CharacterMap.load(data / "character_to_prediction_index.json"))
    return data, prepared


def _trained(prepared: Path, out: Path, favour: str) -> Path:
    """A tiny model trained one epoch on the alphabet, then told to say `favour` everywhere
    (its output bias), so that what the decoders print shows which map they decode with."""
    charmap = ShardDataset(prepared).charmap
    cfg = preset("demo").override(TINY + ["epochs=1"]).with_charmap(charmap)
    train(cfg, prepared, out, progress=False)
    state = torch.load(out / "checkpoints" / "last.pt", weights_only=False)
    assert state["model"]["head_out.bias"].shape == (charmap.n_classes,)
    state["model"]["head_out.bias"][charmap.index[favour]] += 100.0
    path = out / "favour.pt"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> tuple[Path, Path, Path]:
    root = tmp_path_factory.mktemp("small_alphabet")
    data, prepared = _dataset(root, SMALL, seed=5)
    return data, prepared, _trained(prepared, root / "run", "ä")


def test_synthetic_data_and_prepare_use_the_alphabet(small) -> None:
    data, prepared, _ = small
    ds = ShardDataset(prepared)
    assert ds.charmap == CharacterMap.from_mapping(SMALL)
    assert all(ds.charmap.unknown(p) is None for p in ds.phrases)
    assert any("ä" in p or "ö" in p or "sch" in p for p in ds.phrases)
    assert json.loads((data / "character_to_prediction_index.json").read_text(encoding="utf-8")) == SMALL


def test_the_map_travels_through_checkpoint_onnx_tflite_and_submission(small, tmp_path: Path) -> None:
    data, prepared, ckpt = small
    model, cfg, _ = load_model(ckpt)
    assert cfg.charmap == CharacterMap.from_mapping(SMALL) and model.head_out.out_features == 9
    export(ckpt, tmp_path, max_frames=48, log=lambda *_: None)
    for name in ("submission.zip", "model.onnx"):
        rec = Recognizer(tmp_path / name)
        assert rec.model.charmap == cfg.charmap
        texts = {r["text"] for r in rec.transcribe_all(data / "train_landmarks")}
        assert texts == {"ä"}, name
    import csv

    from aslfr.evaluate import evaluate_submission, levenshtein
    r = evaluate_submission(tmp_path / "submission.zip", data, limit=10)
    phrases = [row["phrase"] for row in csv.DictReader(open(data / "train.csv", encoding="utf-8"))][:10]
    n = sum(len(p) for p in phrases)
    assert r["score"] == pytest.approx((n - sum(levenshtein("ä", p) for p in phrases)) / n)


def test_prepared_data_and_model_must_share_the_map(small, synth_dir: Path, tmp_path: Path) -> None:
    data, prepared, ckpt = small
    with pytest.raises(TrainingError, match="prepared with a character map of 8 characters .* the model's has 59"):
        train(preset("demo").override(TINY), prepared, tmp_path / "r", progress=False)
    from aslfr.score import score
    comp = tmp_path / "comp"
    prepare(synth_dir, comp, progress=False)
    with pytest.raises(ValueError, match="its character map \\(8 characters\\) is not the one"):
        score(ckpt, comp, tmp_path / "s.parquet", progress=False)
    # the competition's data prepared with the small map: its phrases are counted as outside it
    with pytest.raises(DataError, match="no usable sequence in 2 file\\(s\\) \\(80 phrase has characters outside the "
                                        "character map"):
        prepare(synth_dir, tmp_path / "narrow", progress=False, characters=CharacterMap.from_mapping(SMALL))
    with pytest.raises(DataError, match="prepared with another character map"):
        prepare(synth_dir, tmp_path / "narrow", progress=False)


def test_more_classes_than_the_competition(tmp_path: Path) -> None:
    data, prepared = _dataset(tmp_path, LARGE, seed=6)
    ckpt = _trained(prepared, tmp_path / "run", "ㄷ")
    model, cfg, _ = load_model(ckpt)
    assert model.head_out.out_features == 71
    export(ckpt, tmp_path / "exp", max_frames=48, tflite=False, log=lambda *_: None)
    rec = Recognizer(tmp_path / "exp" / "model.onnx")
    x = np.random.default_rng(0).random((30, 200), np.float32)
    assert rec.transcribe(x) == "ㄷ"
