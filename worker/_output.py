"""What ``python -m worker moderate`` prints: JSON Lines for pipes, a table for people.

A pipe or a file gets the wire format (one verdict JSON per line on stdout, dead letters
as JSON on stderr) because other programs read it; a terminal gets one short row per
message and a closing summary, because a person reads that. The table shows ids and
reasons only, never message text: the same rule as the logs, since a terminal is
recorded, shared and pasted into tickets just as logs are.

``rich`` is imported only where the table is printed: JSON Lines and the summary work
without it (structlog, though, imports it by itself whenever it is installed).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, NamedTuple, TextIO

from worker.models import CATEGORIES, Action, Source, Verdict
from worker.validate import DeadLetter

if TYPE_CHECKING:
    from rich.text import Text

Format = Literal["jsonl", "table", "summary"]

Numbered = tuple[int, Verdict | DeadLetter]  # (line number in the input, its outcome)

# The one command that gives a run without an API key an LLM stage (see the script).
LOCAL_MODEL_HINT = (
    "start a local model with docker/llama-server.sh serve, "
    "then export the lines of docker/llama-server.sh env"
)
DEAD = "dead letter"
REASON_WIDTH = 60  # characters at most; less when the terminal is narrower
_MIN_REASON = 16  # characters the reason keeps before the category and id fold
_MIN_FOLD = 8  # characters an id or category keeps, folding onto more lines
_GAP = 3  # characters between two columns: the divider and its padding

_ACTION_ORDER = sorted(Action, key=lambda a: -a.severity)  # most severe first
_STYLES = {"block": "red", "review": "yellow", "flag": "magenta", "allow": "green", DEAD: "red"}


def default_format(stream: TextIO) -> Format:
    """A table for a person at a terminal; JSON Lines for anything that reads a pipe."""
    try:
        return "table" if stream.isatty() else "jsonl"
    except (AttributeError, ValueError):  # a replaced or closed stream is no terminal
        return "jsonl"


class Row(NamedTuple):
    """One table row, as plain strings (no message text), so it can be tested without
    rich."""

    id: str
    action: str
    source: str
    category: str
    reason: str


def category_cell(verdict: Verdict) -> str:
    """The flagged categories; else the highest score, so a near miss is visible."""
    flagged = [c for c in CATEGORIES if verdict.categories.get(c)]
    if flagged:
        return ", ".join(flagged)
    scores = verdict.category_scores
    top = max(CATEGORIES, key=lambda c: scores.get(c, 0.0))  # ties: taxonomy order
    score = scores.get(top, 0.0)
    return f"{top} {score:.2f}" if score > 0 else "-"


def rows(numbered: Iterable[Numbered]) -> list[Row]:
    """One row per input line, in input order; dead letters by line number and code
    (their detail can quote the input, so it stays on the JSON Lines path)."""
    out = []
    for number, outcome in numbered:
        if isinstance(outcome, DeadLetter):
            ident = outcome.request_id or f"line {number}"
            out.append(Row(_printable(ident), DEAD, "-", "-", outcome.reason.value))
        else:
            reason = _shorten(_printable(outcome.reason or "-"), REASON_WIDTH)
            out.append(
                Row(
                    _printable(outcome.id),
                    outcome.action.value,
                    outcome.source.value,
                    category_cell(outcome),
                    reason,
                )
            )
    return out


@dataclass(frozen=True, slots=True)
class Summary:
    """What a run did and what it cost, from the verdicts alone."""

    messages: int
    actions: Counter[str] = field(default_factory=Counter)
    sources: Counter[str] = field(default_factory=Counter)
    dead: Counter[str] = field(default_factory=Counter)  # by reason code
    llm_calls: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    wall_s: float = 0.0
    llm_enabled: bool = True
    languages: Counter[str] = field(default_factory=Counter)  # "-": could not tell

    @classmethod
    def of(
        cls, outcomes: Iterable[Verdict | DeadLetter], *, llm_enabled: bool, wall_s: float
    ) -> Summary:
        actions: Counter[str] = Counter()
        sources: Counter[str] = Counter()
        dead: Counter[str] = Counter()
        languages: Counter[str] = Counter()
        calls = cost = 0.0
        prompt = completion = messages = 0
        for outcome in outcomes:
            messages += 1
            if isinstance(outcome, DeadLetter):
                dead[outcome.reason.value] += 1
                continue
            actions[outcome.action.value] += 1
            sources[outcome.source.value] += 1
            languages[outcome.language or "-"] += 1
            calls += outcome.usage.llm_calls
            prompt += outcome.usage.prompt_tokens
            completion += outcome.usage.completion_tokens
            cost += outcome.cost_usd
        return cls(
            messages,
            actions,
            sources,
            dead,
            calls,
            prompt,
            completion,
            cost,
            wall_s,
            llm_enabled,
            languages,
        )

    @property
    def verdicts(self) -> int:
        return self.messages - self.dead_letters

    @property
    def dead_letters(self) -> int:
        return sum(self.dead.values())

    @property
    def fallback(self) -> int:
        return self.sources[Source.FALLBACK.value]

    def fallback_line(self) -> str | None:
        """Only with the LLM stage off: how much it left undecided, and the fix."""
        if self.llm_enabled:
            return None
        return (
            f"{self.fallback} of {self.messages} left to the fallback (no LLM configured): "
            + LOCAL_MODEL_HINT
        )

    def lines(self) -> list[str]:
        """The closing summary for a person (``table`` and ``summary``)."""
        dead = f"{self.dead_letters} dead letters"
        if self.dead:
            dead += f" ({_counts(self.dead, sorted(self.dead))})"
        out = [
            f"{self.messages} messages: {self.verdicts} verdicts, {dead}",
            f"actions: {_counts(self.actions, [a.value for a in _ACTION_ORDER])}",
            f"sources: {_counts(self.sources, [s.value for s in Source])}",
            f"languages: {self._languages()}",
            f"LLM: {self._llm()}",
            f"wall time: {self.wall_s:.2f} s from launch",
        ]
        hint = self.fallback_line()
        return [*out, hint] if hint else out

    def _languages(self) -> str:
        """The most frequent first, at most eight; "-" for texts too short to tell."""
        top = self.languages.most_common(8)
        rest = sum(self.languages.values()) - sum(n for _, n in top)
        text = ", ".join(f"{code} {n}" for code, n in top) or "none"
        return f"{text}, {rest} other" if rest else text

    def line(self) -> str:
        """Today's single stderr line of the JSON Lines path, with the cost added."""
        text = (
            f"moderate: {self.verdicts} verdicts, {self.dead_letters} dead letters; "
            f"LLM {self._llm()}; {self.wall_s:.2f} s from launch"
        )
        hint = self.fallback_line()
        return f"{text}; {hint}" if hint else text

    def _llm(self) -> str:
        return (
            f"{round(self.llm_calls)} calls, {self.prompt_tokens} prompt + "
            f"{self.completion_tokens} completion tokens, {_usd(self.cost_usd)}"
        )


def write_jsonl(numbered: Iterable[Numbered], out: TextIO, err: TextIO) -> None:
    """The wire format, byte for byte what scripts have always read."""
    for number, outcome in numbered:
        if isinstance(outcome, DeadLetter):
            record = {"dead_letter": outcome.reason.value, "line": number, "detail": outcome.detail}
            print(json.dumps(record), file=err)
        else:
            out.write(outcome.model_dump_json() + "\n")
    out.flush()


def write_table(numbered: Iterable[Numbered], out: TextIO, width: int | None = None) -> None:
    """The rows as a compact table; ``width`` None: the terminal's (80 off a terminal)."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(file=out, width=width, highlight=False, markup=False, emoji=False)
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    cells = rows(numbered)
    sizes = column_widths(cells, console.width)
    for name, size in zip(Row._fields, sizes, strict=True):
        cut = name == "reason"  # the reason is cut with an ellipsis, the others fold
        table.add_column(
            name,
            min_width=size,
            max_width=size,
            no_wrap=cut,
            overflow="ellipsis" if cut else "fold",
        )
    for row in cells:
        action = _text(row.action, _STYLES.get(row.action, ""))
        table.add_row(_text(row.id), action, *(_text(cell) for cell in row[2:]))
    console.print(table)
    out.flush()


def column_widths(cells: Sequence[Row], total: int) -> list[int]:
    """Each column's width in a table ``total`` characters wide.

    Given fixed widths that add up, rich lays the table out as asked; left to itself it
    shrinks every column of a wide table alike until ids and actions are unreadable.
    So: the widest cell of each column; when that does not fit, the reason gives way
    first (down to ``_MIN_REASON``), then the category, then the id (both fold onto
    more lines, down to ``_MIN_FOLD``); action and source never shrink.
    """
    sizes = [max(len(name), *(len(row[i]) for row in cells)) for i, name in enumerate(Row._fields)]
    sizes[4] = min(sizes[4], REASON_WIDTH)
    room = total - _GAP * (len(sizes) - 1)
    for index, floor in ((4, _MIN_REASON), (3, _MIN_FOLD), (0, _MIN_FOLD)):
        over = sum(sizes) - room
        if over <= 0:
            break
        sizes[index] = max(min(sizes[index], floor), sizes[index] - over)
    return sizes


def write(
    fmt: Format, numbered: Sequence[Numbered], summary: Summary, out: TextIO, err: TextIO
) -> None:
    """Everything a run prints after the pipeline, in the chosen format."""
    if fmt == "jsonl":
        write_jsonl(numbered, out, err)
        print(summary.line(), file=err)
        return
    if fmt == "table":
        write_table(numbered, out)
        out.write("\n")
    out.write("".join(line + "\n" for line in summary.lines()))
    out.flush()


def _text(value: str, style: str = "") -> Text:
    """A literal cell: ``[red]`` in an id is text, not rich markup."""
    from rich.text import Text

    return Text(value, style=style)


def _printable(value: str) -> str:
    """Control characters out: an id must not move the cursor or retitle the terminal."""
    return "".join(c if c.isprintable() else "\ufffd" for c in value)


def _shorten(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1].rstrip() + "…"


def _counts(counter: Counter[str], order: Sequence[str]) -> str:
    known = [k for k in order if counter[k]] + sorted(k for k in counter if k not in order)
    return ", ".join(f"{k} {counter[k]}" for k in known if counter[k]) or "-"


def _usd(cost: float) -> str:
    if 0 < cost < 0.0001:
        return f"${cost:.6f}"
    return f"${cost:.4f}"
