"""Every figure of docs/BENCHMARKS.md comes from a results file.

The generated sections (between `<!-- key:start -->` and `<!-- key:end -->`) are written by the
benchmark scripts from their results files. The hand-written rest is split into parts: a part
opens at a hand-written heading and runs to the next heading of the same or higher level or to the
next generated section, whichever comes first (text before a segment's first heading is a part of
its own). A part names its sources on the first line after its heading (or as its own first line)::

    <!-- figures: benchmarks/results/archive/learning_loop.protocol1.json, benchmarks/results/serve.json -->

A line belongs to the innermost such part around it. Checked there:

- every percentage written with decimals (`90.88%`, `-0.19%`; in `81.69 / 84.61 / 89.12%` each
  number) against any number of the cited files, as a fraction (0.9088x) or as a percentage
  (90.88x), at the precision the prose writes (90.88% matches 0.90875 to 0.90885);
- every p-value written `p = X`, `p ≤ X` or `p < X` (`p = 0.051`, `p ≤ 1.7e-5`), at the precision
  of its last digit;
- every duration written with decimals in min, s or ms (`13.8 min`, `3.0-3.5 min`, `0.45-0.47 s`;
  in `7.9, 11.6 and 15.0 min` or `9.9 vs. 2.5 min` each number), against the numbers whose key
  names a unit of time (`retrain_seconds`, `p99_ms`), converted to the unit written.

For percentages and p-values, numbers inside the files' strings count too (the gate's `reason`:
"+2.01% ... p=1.2e-07"). Signs are ignored. Not checked: differences written in points ("+1.76
points", "-0.14 points": two values of a file subtracted; a percentage followed by "point(s)" is
skipped as well); whole-number percentages, which in these parts are targets, thresholds and
confidence levels ("the 92% target", "90% CI", ">= 25%"); whole-number durations and other bare
numbers (counts, ratios such as "9.3x"); inline code (commands and paths).

Every hand-written line with a percentage must lie in a part with a marker, and every file a
marker names must exist. Archived results files (benchmarks/results/archive/) name the commit and
path they were taken from (`archived_from`).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from support.docs import REPO, read_markdown

BENCHMARKS = REPO / "docs" / "BENCHMARKS.md"
ARCHIVE = REPO / "benchmarks" / "results" / "archive"

_HEADING = re.compile(r"^ {0,3}(#{1,6})\s+\S")
_GENERATED_START = re.compile(r"^<!-- ([\w.-]+):start -->\s*$")
_GENERATED_END = "<!-- {}:end -->"
_MARKER = re.compile(r"^<!--\s*figures:\s*(.+?)\s*-->\s*$")
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_INLINE_CODE = re.compile(r"(`+)(?!`).+?(?<!`)\1(?!`)", re.S)

_NUMBER = r"\d+(?:\.\d+)?"
_PERCENTAGES = re.compile(rf"(?<![\w.]){_NUMBER}(?:\s*/\s*{_NUMBER})*\s?%(?!\s*points?\b)")
_P_VALUE = re.compile(r"\bp\s*(?:=|≤|<)\s*(\d+(?:\.\d+)?(?:e[-−]?\d+)?)")
_LIST = r"(?:\s*[-–/]\s*|,\s*|\s+and\s+|\s+vs\.\s+|\s+to\s+)"  # "3.0-3.5", "7.9, 11.6 and 15.0"
_DURATIONS = re.compile(rf"(?<![\w.]){_NUMBER}(?:{_LIST}{_NUMBER})*\s?(min|ms|s)\b")
_JSON_NUMBER = re.compile(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?")
_SECONDS_PER = {"min": 60.0, "s": 1.0, "ms": 0.001}


@dataclass(frozen=True)
class Part:
    """A hand-written part: lines [start, end) (0-based), its heading level (0: no heading)."""

    start: int
    end: int
    level: int
    sources: tuple[str, ...] | None  # the marker's paths, None without a marker
    marker_line: int | None


@dataclass(frozen=True)
class Figure:
    line: int  # 1-based
    kind: str  # "percentage", "p-value", "duration"
    text: str
    unit: str = ""

    def __str__(self) -> str:
        return f"{self.text}{' ' + self.unit if self.unit else '%' if self.kind == 'percentage' else ''}"


# ------------------------------------------------------------------------------ the doc's parts


def generated_lines(lines: list[str]) -> list[bool]:
    """True for each line of a generated section, its start and end markers included."""
    generated = [False] * len(lines)
    i = 0
    while i < len(lines):
        start = _GENERATED_START.match(lines[i].strip())
        if start:
            end = _GENERATED_END.format(start[1])
            j = next((k for k in range(i, len(lines)) if lines[k].strip() == end), len(lines) - 1)
            for k in range(i, j + 1):
                generated[k] = True
            i = j
        i += 1
    return generated


def parts(lines: list[str]) -> list[Part]:
    generated = generated_lines(lines)
    found: list[Part] = []
    i = 0
    while i < len(lines):
        if generated[i]:
            i += 1
            continue
        segment_end = next((k for k in range(i, len(lines)) if generated[k]), len(lines))
        headings = [(k, len(m[1])) for k in range(i, segment_end) if (m := _HEADING.match(lines[k]))]
        lead_end = headings[0][0] if headings else segment_end
        if any(line.strip() for line in lines[i:lead_end]):
            found.append(_part(lines, i, lead_end, 0, i))
        for n, (k, level) in enumerate(headings):
            end = next((h for h, lv in headings[n + 1 :] if lv <= level), segment_end)
            found.append(_part(lines, k, end, level, k + 1))
        i = segment_end
    return found


def _part(lines: list[str], start: int, end: int, level: int, body: int) -> Part:
    first = next((k for k in range(body, end) if lines[k].strip()), None)
    marker = _MARKER.match(lines[first].strip()) if first is not None else None
    if not marker:
        return Part(start, end, level, None, None)
    sources = tuple(s.strip() for s in marker[1].split(",") if s.strip())
    return Part(start, end, level, sources, first)


def owners(lines: list[str], found: list[Part]) -> list[Part | None]:
    """For each line, the innermost part with a marker that holds it (None: no marker)."""
    owner: list[Part | None] = [None] * len(lines)
    marked = sorted((p for p in found if p.sources is not None), key=lambda p: p.end - p.start, reverse=True)
    for part in marked:  # the widest first, so an inner part overwrites an outer one
        for k in range(part.start, part.end):
            owner[k] = part
    generated = generated_lines(lines)
    return [None if generated[k] else owner[k] for k in range(len(lines))]


# ------------------------------------------------------------------------------ figures


def figures(text: str, first_line: int) -> Iterator[Figure]:
    """The checked figures of `text` (its first line is `first_line`, 1-based); comments and
    inline code are blanked first, keeping line breaks."""

    def blank(match: re.Match[str]) -> str:
        return re.sub(r"[^\n]", " ", match[0])

    text = _INLINE_CODE.sub(blank, _COMMENT.sub(blank, text))

    def line_of(pos: int) -> int:
        return first_line + text.count("\n", 0, pos)

    for match in _PERCENTAGES.finditer(text):
        for number in re.finditer(_NUMBER, match[0]):
            if "." in number[0]:
                yield Figure(line_of(match.start() + number.start()), "percentage", number[0])
    for match in _P_VALUE.finditer(text):
        yield Figure(line_of(match.start()), "p-value", match[1].replace("−", "-"))
    for match in _DURATIONS.finditer(text):
        for number in re.finditer(_NUMBER, match[0]):
            if "." in number[0]:
                yield Figure(line_of(match.start() + number.start()), "duration", number[0], match[1])


@dataclass(frozen=True)
class Numbers:
    """A results file's numbers: all of them (those inside its strings too; not its keys, nor
    booleans), and the durations among them in seconds (a number whose key names its unit:
    `retrain_seconds`, `p99_ms`, `full_collections_ms`)."""

    all: tuple[float, ...]
    seconds: tuple[float, ...]


def json_numbers(value: Any) -> Numbers:
    found: list[float] = []
    seconds: list[float] = []

    def walk(item: Any, key: str) -> None:
        if isinstance(item, bool) or item is None:
            return
        if isinstance(item, int | float):
            found.append(abs(float(item)))
            if (scale := _unit_of(key)) is not None:
                seconds.append(abs(float(item)) * scale)
        elif isinstance(item, str):
            found.extend(float(m[0]) for m in _JSON_NUMBER.finditer(item))
        elif isinstance(item, dict):
            for name, inner in item.items():
                walk(inner, str(name))
        elif isinstance(item, list):
            for inner in item:
                walk(inner, key)

    walk(value, "")
    return Numbers(tuple(found), tuple(seconds))


def _unit_of(key: str) -> float | None:
    """Seconds per unit of the number a key names, None for a key that names no unit of time."""
    words = key.lower().split("_")
    if "ms" in words:
        return 0.001
    if {"seconds", "s", "secs"} & set(words):
        return 1.0
    if {"minutes", "min"} & set(words):
        return 60.0
    return None


def _last_digit(text: str) -> float:
    """The place value of the last written digit: 0.01 for "90.88", 1e-7 for "1e-7"."""
    mantissa, _, exponent = text.lower().partition("e")
    decimals = len(mantissa.split(".")[1]) if "." in mantissa else 0
    return 10.0 ** (-decimals + (int(exponent) if exponent else 0))


def matches(figure: Figure, numbers: Numbers) -> bool:
    written = abs(float(figure.text))
    tolerance = _last_digit(figure.text) / 2 * (1 + 1e-9) + 1e-12
    if figure.kind == "duration":
        candidates = [s / _SECONDS_PER[figure.unit] for s in numbers.seconds]
    elif figure.kind == "percentage":
        candidates = [n * scale for n in numbers.all for scale in (100.0, 1.0)]
    else:
        candidates = list(numbers.all)
    return any(math.isclose(c, written, abs_tol=tolerance) for c in candidates)


# ------------------------------------------------------------------------------ the check


def figure_problems(doc: Path, root: Path = REPO) -> list[str]:
    """What is wrong with the figures of `doc`'s hand-written parts; paths in markers are
    relative to `root`."""
    lines = list(read_markdown(doc).prose)
    found = parts(lines)
    owner = owners(lines, found)
    generated = generated_lines(lines)
    where = doc.name if not doc.is_relative_to(REPO) else str(doc.relative_to(REPO))
    problems: list[str] = []
    numbers: dict[str, Numbers] = {}
    for part in found:
        for source in part.sources or ():
            path = root / source
            if not path.is_file():
                problems.append(f"{where}:{(part.marker_line or 0) + 1}: no results file {source}")
            elif source not in numbers:
                numbers[source] = json_numbers(json.loads(path.read_text(encoding="utf-8")))
    for k, text in enumerate(lines):
        if not generated[k] and owner[k] is None and "%" in _COMMENT.sub("", text):
            problems.append(
                f"{where}:{k + 1}: a percentage in a hand-written part without a "
                f"`<!-- figures: ... -->` line under its heading: {text.strip()[:80]}"
            )
    k = 0
    while k < len(lines):  # runs of lines with the same owner, so a figure may wrap a line
        part = owner[k]
        j = k
        while j < len(lines) and owner[j] is part:
            j += 1
        if part is not None:
            cited = [numbers[s] for s in part.sources or () if s in numbers]
            for figure in figures("\n".join(lines[k:j]), k + 1):
                if not any(matches(figure, n) for n in cited):
                    problems.append(
                        f"{where}:{figure.line}: {figure.kind} {figure} is in none of "
                        f"{', '.join(part.sources or ())}"
                    )
        k = j
    return problems


def test_every_hand_written_figure_of_benchmarks_is_in_a_results_file_it_cites() -> None:
    problems = figure_problems(BENCHMARKS)
    assert not problems, f"{len(problems)} figure(s) not traced to a results file:\n" + "\n".join(problems)


def test_benchmarks_cites_its_sources() -> None:
    """Not vacuous: the doc has marked parts, and they hold figures."""
    lines = list(read_markdown(BENCHMARKS).prose)
    marked = [p for p in parts(lines) if p.sources]
    assert len(marked) >= 3
    owner = owners(lines, marked)
    checked = [f for k, p in enumerate(owner) if p is not None for f in figures(lines[k], k + 1)]
    assert len(checked) >= 100


@pytest.mark.parametrize("path", sorted(ARCHIVE.glob("*.json")), ids=lambda p: p.name)
def test_archived_results_name_their_commit(path: Path) -> None:
    origin = json.loads(path.read_text(encoding="utf-8")).get("archived_from")
    assert isinstance(origin, dict), f"{path.name}: no archived_from"
    assert re.fullmatch(r"[0-9a-f]{40}", str(origin.get("commit"))), f"{path.name}: archived_from.commit"
    assert str(origin.get("path", "")).startswith("benchmarks/results/"), f"{path.name}: archived_from.path"


# ------------------------------------------------------------------------------ the check can fail

_RESULTS = {
    "served": 0.908766,
    "old": 0.816883,
    "gate": {"p_better": 0.051416, "reason": "test accuracy +2.01% (p=1.2e-07)"},
    "retrain_seconds": [208.8, 180.5],
}

_DOC = """# Benchmarks

No figures here.

<!-- loop:start -->
## Loop

Generated: 12.34% and p = 0.777 are the script's business.
<!-- loop:end -->

### Notes (archived)
<!-- figures: results/loop.json -->

Served 90.88% (old: 81.69 / 90.88%), refused at p = 0.051, +2.01% at p = 1e-7; retrains 3.0-3.5 min,
+1.76 points, the 92% target, `--note '9.99%'`.

#### A subsection

Still checked against the part above: 90.9%.

## Unmarked

Not traced: 55.55%.
"""


def _write(tmp_path: Path, doc: str) -> Path:
    (tmp_path / "results").mkdir(exist_ok=True)
    (tmp_path / "results" / "loop.json").write_text(json.dumps(_RESULTS))
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(doc)
    return path


def test_the_check_passes_on_traced_figures_and_finds_the_unmarked_part(tmp_path: Path) -> None:
    problems = figure_problems(_write(tmp_path, _DOC), tmp_path)
    assert problems == [
        "BENCHMARKS.md:23: a percentage in a hand-written part without a `<!-- figures: ... -->` line "
        "under its heading: Not traced: 55.55%."
    ]


@pytest.mark.parametrize(
    ("written", "changed", "problem"),
    [
        ("Served 90.88%", "Served 90.89%", "14: percentage 90.89% is in none of results/loop.json"),
        ("(old: 81.69 /", "(old: 81.68 /", "14: percentage 81.68% is in none of results/loop.json"),
        ("p = 0.051", "p = 0.052", "14: p-value 0.052 is in none of results/loop.json"),
        ("p = 1e-7", "p = 2e-7", "14: p-value 2e-7 is in none of results/loop.json"),
        ("3.0-3.5 min", "3.0-3.9 min", "14: duration 3.9 min is in none of results/loop.json"),
        ("above: 90.9%", "above: 90.7%", "19: percentage 90.7% is in none of results/loop.json"),
        ("results/loop.json -->", "results/gone.json -->", "12: no results file results/gone.json"),
    ],
)
def test_the_check_fails_when_a_figure_changes(
    tmp_path: Path, written: str, changed: str, problem: str
) -> None:
    """One figure changed in a copy of the text: exactly that one is reported (a source renamed:
    the file first, then every figure it held)."""
    assert written in _DOC
    before = figure_problems(_write(tmp_path, _DOC), tmp_path)  # the unmarked part
    problems = figure_problems(_write(tmp_path, _DOC.replace(written, changed)), tmp_path)
    new = [p for p in problems if p not in before]
    assert new[0] == f"BENCHMARKS.md:{problem}"
    assert len(new) == 1 or "no results file" in problem


def test_a_part_without_a_marker_is_reported(tmp_path: Path) -> None:
    doc = _DOC.replace("<!-- figures: results/loop.json -->\n", "")
    problems = figure_problems(_write(tmp_path, doc), tmp_path)
    missing = "BENCHMARKS.md:13: a percentage in a hand-written part without"
    assert any(p.startswith(missing) for p in problems)
