"""Reading replies: every valid entry is an answer, anything else leaves its item missing."""

from __future__ import annotations

import re

import pytest

from worker._prompt import CODES, encode_entry, index_pattern, response_format
from worker._reply import ReplyReader, parse_entry
from worker.models import CATEGORIES

H = CATEGORIES.index("harassment")
HT = CATEGORIES.index("harassment/threatening")
V = CATEGORIES.index("violence")


def read(content: str, n: int, pieces: int = 1) -> ReplyReader:
    reader = ReplyReader(n)
    step = max(1, len(content) // pieces)
    for start in range(0, len(content), step):
        reader.feed(content[start : start + step])
    reader.finish()
    return reader


@pytest.mark.parametrize("n", [1, 2, 9, 10, 11, 32, 99, 100, 101, 257, 1000])
def test_index_pattern_matches_exactly_the_item_numbers(n):
    pattern = re.compile(index_pattern(n))
    assert all(pattern.fullmatch(str(k)) for k in range(n))
    assert not any(pattern.fullmatch(str(k)) for k in range(n, n + 50))
    assert not any(pattern.fullmatch(s) for s in ("00", "01", "-1", "", "1.0"))


def test_the_schema_bounds_what_the_parser_checks():
    schema = response_format(3)["json_schema"]["schema"]["properties"]["r"]
    assert schema["minItems"] == schema["maxItems"] == 3
    entry = re.compile(schema["items"]["pattern"])
    assert entry.fullmatch("0") and entry.fullmatch("2ht95vi60")
    for bad in ("3", "0hr5", "0hr100", "0xx50", "0hr50hr50hr50hr50hr50", "0 hr50", "hr50"):
        assert not entry.fullmatch(bad), bad
    # whatever the pattern lets through, the parser accepts
    assert parse_entry("2ht95vi60", 3) is not None


def test_entries_give_scores_and_a_subcategory_lifts_its_parent():
    answer = parse_entry("4ht90vi60", 5)
    assert answer is not None and answer.index == 4 and answer.codes == 2
    assert answer.scores[HT] == 0.9 and answer.scores[H] == 0.9 and answer.scores[V] == 0.6
    assert sum(1 for s in answer.scores if s) == 3
    clean = parse_entry("0", 1)
    assert clean is not None and set(clean.scores) == {0.0}


@pytest.mark.parametrize("entry", ["5", "0zz50", "0hr05", "0hr", "x", "01", "0hr50extra"])
def test_invalid_entries_are_not_answers(entry):
    assert parse_entry(entry, 5) is None


def test_streamed_pieces_give_entries_as_soon_as_they_are_complete():
    reader = ReplyReader(3)
    assert reader.feed('{"r":["0') == []
    assert [a.index for a in reader.feed('","1hr8')] == [0]
    assert [a.index for a in reader.feed('0","2"]}')] == [1, 2]
    reader.finish()
    assert reader.broken is None and reader.missing() == []


def test_answers_out_of_order_are_placed_by_number():
    reader = read('{"r":["2","0hr90","1"]}', 3, pieces=7)
    assert reader.missing() == [] and reader.found[0][H] == 0.9


def test_a_partial_reply_leaves_the_rest_missing_never_clean():
    reader = read('{"r":["0","1hr80"', 4)  # cut off
    assert reader.missing() == [2, 3] and reader.broken
    reader = read('{"r":["0","3"]}', 4)  # two entries for four items
    assert reader.missing() == [1, 2] and "2 entries for 4" in (reader.broken or "")


def test_duplicates_and_malformed_entries_count_as_missing():
    reader = read('{"r":["0","0hr90","9","2"]}', 3)
    assert reader.found[0][H] == 0.0  # the first answer stands
    assert reader.missing() == [1] and reader.malformed == 2


@pytest.mark.parametrize(
    "content", ["", "nope", '{"x":[]}', '{"r":"0"}', "[1,2]", '{"r":["0","1"]}}oops']
)
def test_what_is_not_the_document_is_broken(content):
    reader = read(content, 2)
    assert reader.broken is not None


def test_malformed_tail_keeps_the_entries_before_it():
    reader = read('{"r":["0","1hr70",}}oops', 3)
    assert sorted(reader.found) == [0, 1] and reader.missing() == [2]


def test_encode_entry_round_trips():
    scores = {"harassment": 80, "violence": 55, "hate": 4}
    answer = parse_entry(encode_entry(7, scores), 8)
    assert answer is not None and answer.scores[H] == 0.8 and answer.scores[V] == 0.55
    assert all(code.isalpha() and len(code) == 2 for code in CODES)
