"""What ``moderate`` prints: the table's rows and columns, the summary, JSON Lines."""

from __future__ import annotations

import io
import json
import os
import pty

from worker import _output
from worker._output import DEAD, REASON_WIDTH, Row, Summary, column_widths, rows
from worker.models import CATEGORIES, Action, Category, Source, Usage, Verdict
from worker.validate import DeadLetter, DeadReason, Envelope

SECRET = "my very private sentence"


def verdict(
    id: str = "a",
    action: Action = Action.ALLOW,
    source: Source = Source.RULES,
    flagged: tuple[Category, ...] = (),
    scores: dict[Category, float] | None = None,
    reason: str | None = None,
    usage: Usage | None = None,
    cost: float = 0.0,
    language: str | None = "en",
) -> Verdict:
    return Verdict(
        id=id,
        tenant=None,
        action=action,
        flagged=action is not Action.ALLOW,
        categories={c: c in flagged for c in CATEGORIES},
        category_scores={c: (scores or {}).get(c, 0.0) for c in CATEGORIES},
        source=source,
        reason=reason,
        policy_version="test",
        usage=usage or Usage(),
        cost_usd=cost,
        latency_ms=1.0,
        language=language,
        metadata={"note": SECRET},  # echoed metadata is the producer's: never in the table
    )


def dead(reason: DeadReason = DeadReason.INVALID_JSON) -> DeadLetter:
    body = json.dumps({"id": "x", "text": SECRET}).encode()[:-1]  # the raw input
    return DeadLetter(Envelope(body=body), reason, f"bad input near {SECRET!r}")


def sample() -> list[_output.Numbered]:
    return [
        (1, verdict("m1", Action.BLOCK, flagged=("harassment", "violence"), reason="Threat.")),
        (2, verdict("m2", scores={"hate": 0.1, "sexual": 0.42}, source=Source.LLM)),
        (3, verdict("m3", Action.REVIEW, Source.FALLBACK, reason="not classified: LLM off")),
        (5, dead()),
    ]


def test_rows_show_ids_actions_sources_categories_and_reasons():
    assert rows(sample()) == [
        Row("m1", "block", "rules", "harassment, violence", "Threat."),
        Row("m2", "allow", "llm", "sexual 0.42", "-"),  # nothing flagged: the top score
        Row("m3", "review", "fallback", "-", "not classified: LLM off"),
        Row("line 5", DEAD, "-", "-", "invalid_json"),  # by line number and reason code
    ]


def test_a_long_reason_is_shortened_with_an_ellipsis():
    (row,) = rows([(1, verdict(reason="word " * 40))])
    assert len(row.reason) == REASON_WIDTH and row.reason.endswith("…")
    assert row.reason.startswith("word word")


def test_the_table_has_every_column_and_row_and_no_message_text():
    out = io.StringIO()
    _output.write_table(sample(), out, width=100)
    text = out.getvalue()
    lines = text.splitlines()
    assert lines[0].split() == ["id", "action", "source", "category", "reason"]
    assert "m1" in lines[2] and "block" in lines[2] and "harassment, violence" in lines[2]
    assert "sexual 0.42" in text and "not classified: LLM off" in text
    dead_row = next(line for line in lines if "line 5" in line)
    assert DEAD in dead_row and "invalid_json" in dead_row
    assert SECRET not in text and "private" not in text
    assert "\x1b" not in text  # not a terminal: no colour codes


def test_the_table_fits_the_terminal_by_shortening_the_reason():
    numbered: list[_output.Numbered] = [
        (1, verdict("m1", Action.BLOCK, flagged=("harassment",), reason="x" * 200))
    ]
    out = io.StringIO()
    _output.write_table(numbered, out, width=60)
    assert max(len(line.rstrip()) for line in out.getvalue().splitlines()) == 60
    assert "harassment" in out.getvalue() and "x…" in out.getvalue()
    widths = column_widths(rows(numbered), 60)
    assert widths[:4] == [2, 6, 6, 10]  # id, action, source and category keep their width
    assert sum(widths) + 3 * 4 <= 60  # the reason takes what is left


def test_ids_are_shown_literally_not_as_markup_or_terminal_control():
    out = io.StringIO()
    _output.write_table([(1, verdict("[red]m1[/red]\x1b]0;owned\x07"))], out, width=100)
    assert "[red]m1[/red]" in out.getvalue()
    assert "\x1b" not in out.getvalue() and "\x07" not in out.getvalue()


def test_summary_counts_actions_sources_dead_letters_usage_and_cost():
    third = Usage(prompt_tokens=100, completion_tokens=10, llm_calls=1 / 3)
    outcomes = [
        verdict("a", Action.BLOCK, Source.LLM, usage=third, cost=0.001),
        verdict("b", Action.ALLOW, Source.LLM, usage=third, cost=0.001),
        verdict("c", Action.ALLOW, Source.LLM, usage=third, cost=0.001),
        verdict("d", Action.REVIEW, Source.RULES, language=None),
        dead(DeadReason.TOO_LARGE),
    ]
    summary = Summary.of(outcomes, llm_enabled=True, wall_s=1.25)
    assert (summary.messages, summary.verdicts, summary.dead_letters) == (5, 4, 1)
    assert summary.lines() == [
        "5 messages: 4 verdicts, 1 dead letters (too_large 1)",
        "actions: block 1, review 1, allow 2",
        "sources: rules 1, llm 3",
        "languages: en 3, - 1",
        "LLM: 1 calls, 300 prompt + 30 completion tokens, $0.0030",
        "wall time: 1.25 s from launch",
    ]
    assert summary.line() == (
        "moderate: 4 verdicts, 1 dead letters; "
        "LLM 1 calls, 300 prompt + 30 completion tokens, $0.0030; 1.25 s from launch"
    )


def test_the_fallback_line_names_the_local_model_only_when_the_llm_is_off():
    outcomes = [o for _, o in sample()]
    off = Summary.of(outcomes, llm_enabled=False, wall_s=0.5)
    on = Summary.of(outcomes, llm_enabled=True, wall_s=0.5)
    expected = (
        "1 of 4 left to the fallback (no LLM configured): start a local model with "
        "docker/llama-server.sh serve, then export the lines of docker/llama-server.sh env"
    )
    assert off.lines()[-1] == expected
    assert off.line().endswith("; " + expected)
    assert not any("llama-server" in line for line in on.lines())
    assert "llama-server" not in on.line() and "no LLM" not in on.line()


def test_jsonl_is_the_wire_format_with_dead_letters_and_the_summary_on_stderr():
    out, err = io.StringIO(), io.StringIO()
    numbered = sample()
    summary = Summary.of([o for _, o in numbered], llm_enabled=True, wall_s=0.1)
    _output.write("jsonl", numbered, summary, out, err)
    verdicts = [o for _, o in numbered if isinstance(o, Verdict)]
    assert out.getvalue() == "".join(v.model_dump_json() + "\n" for v in verdicts)
    first, last = err.getvalue().splitlines()
    assert json.loads(first) == {
        "dead_letter": "invalid_json",
        "line": 5,
        "detail": f"bad input near {SECRET!r}",
    }
    assert last == summary.line()


def test_table_and_summary_formats_print_the_summary_on_stdout():
    numbered = sample()
    summary = Summary.of([o for _, o in numbered], llm_enabled=False, wall_s=0.1)
    for fmt in ("table", "summary"):
        out, err = io.StringIO(), io.StringIO()
        _output.write(fmt, numbered, summary, out, err)
        assert out.getvalue().endswith("\n".join(summary.lines()) + "\n")
        assert err.getvalue() == ""
        assert ("m1" in out.getvalue()) is (fmt == "table")  # summary: no rows


def test_the_default_is_a_table_on_a_terminal_and_jsonl_elsewhere():
    assert _output.default_format(io.StringIO()) == "jsonl"
    leader, follower = pty.openpty()
    try:
        with open(follower, "w", closefd=False) as terminal:
            assert _output.default_format(terminal) == "table"
        read, write = os.pipe()
        with open(write, "w") as pipe:
            assert _output.default_format(pipe) == "jsonl"
        os.close(read)
    finally:
        os.close(leader)
        os.close(follower)
