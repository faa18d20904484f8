import pytest

from aslfr.metric import competition_score, sample_score
from aslfr.vocab import BLANK, CHAR_TO_INDEX, CHARACTERS, ctc_greedy, encode, load_character_map


def test_character_map_is_the_competitions() -> None:
    assert len(CHARACTERS) == 59 and BLANK == 59
    assert CHAR_TO_INDEX[" "] == 0 and CHAR_TO_INDEX["0"] == 15 and CHAR_TO_INDEX["a"] == 32
    assert CHAR_TO_INDEX["~"] == 58 and CHAR_TO_INDEX["_"] == 31


def test_ctc_greedy_collapses_repeats_then_drops_blanks() -> None:
    a, b = CHAR_TO_INDEX["a"], CHAR_TO_INDEX["b"]
    assert ctc_greedy([a, a, BLANK, a, b, b, BLANK, BLANK]) == "aab"
    assert ctc_greedy([BLANK, BLANK]) == ""


def test_encode_rejects_unknown_characters() -> None:
    assert encode("ab").tolist() == [32, 33]
    with pytest.raises(ValueError, match="'A'"):
        encode("aA")


def test_competition_score_is_total_over_the_set() -> None:
    # N = 3 + 5 = 8, D = 1 + 5 = 6 (plain Levenshtein: a swap costs 2, not 1)
    assert competition_score(["abd", ""], ["abc", "hello"]) == pytest.approx((8 - 6) / 8)
    assert competition_score(["ba"], ["ab"]) == pytest.approx(0.0)


def test_sample_score_can_be_negative() -> None:
    assert sample_score("abc", "abc") == 1.0
    assert sample_score("xxxxxx", "ab") == pytest.approx((2 - 6) / 2)


def test_character_map_file_is_checked(tmp_path) -> None:
    p = tmp_path / "map.json"
    p.write_text('{"a": 0}')
    with pytest.raises(ValueError, match="differs"):
        load_character_map(p)
