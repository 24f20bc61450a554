"""The few-shot prompt: intent list, examples, constrained answer format and strict parsing.

Layout of one request (chat messages):

1. `system`: the task, the answer format and every intent (with its description when the
   dataset has one). Identical for every query, so a provider's prompt cache can reuse it.
2. K examples as `user` / `assistant` turns, the assistant answering in exactly the format
   asked for. Examples as turns, not prose, because that is the format chat models are tuned
   to imitate. `per-class`: the same seeded sample for every query (also cacheable);
   `nearest`: the K training queries closest to this one (MiniLM embeddings, cosine), the
   closest last, next to the query.
3. `user`: the query.

The answer is `{"intent": "<label>"}`. Where the server supports structured outputs the label
is an `enum` of the JSON schema, so it cannot be anything else; otherwise :func:`parse_answer`
accepts only that JSON or the bare label, spelled exactly (case aside). Anything else is an
invalid answer, counted as such, never mapped to the "closest" label.
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from typing import Any, Literal

__all__ = [
    "DEFAULT_SHOTS",
    "OOS_DESCRIPTION",
    "Example",
    "Selection",
    "answer_json",
    "build_messages",
    "fixed_examples",
    "parse_answer",
    "response_format",
    "system_prompt",
]

Selection = Literal["per-class", "nearest"]
Example = tuple[str, str]  # (text, label)
#: per-class: K examples *per intent*; nearest: K examples in total.
DEFAULT_SHOTS: dict[str, int] = {"per-class": 3, "nearest": 20}
OOS_DESCRIPTION = "out of scope: the query matches none of the other intents"

_SYSTEM = """You are an intent classifier for customer support queries.
Read the customer's query and answer with the one intent from the list below that best matches it.
Answer with JSON only, exactly in this form: {{"intent": "<intent name>"}}.
Use an intent name from the list, spelled exactly as listed.{oos}

Intents:
{intents}"""


def system_prompt(labels: Sequence[str], descriptions: dict[str, str], *, oos_label: str = "oos") -> str:
    """The system message: task, answer format and the intent list (descriptions where known)."""
    lines = []
    for label in labels:
        description = descriptions.get(label) or (OOS_DESCRIPTION if label == oos_label else "")
        lines.append(f"- {label}: {description}" if description else f"- {label}")
    oos = f'\nIf the query matches none of the intents, answer "{oos_label}".' if oos_label in labels else ""
    return _SYSTEM.format(oos=oos, intents="\n".join(lines))


def answer_json(label: str) -> str:
    """The exact answer text the model is asked for (also what the examples show)."""
    return json.dumps({"intent": label})


def response_format(labels: Sequence[str]) -> dict[str, Any]:
    """OpenAI `response_format`: a strict JSON schema whose only field is an enum of the labels."""
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "intent",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {"intent": {"type": "string", "enum": list(labels)}},
                "required": ["intent"],
                "additionalProperties": False,
            },
        },
    }


def build_messages(system: str, examples: Sequence[Example], query: str) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}]
    for text, label in examples:
        messages.append({"role": "user", "content": text})
        messages.append({"role": "assistant", "content": answer_json(label)})
    messages.append({"role": "user", "content": query})
    return messages


def fixed_examples(per_intent: Mapping[str, Sequence[str]], shots: int, *, seed: int = 0) -> list[Example]:
    """`shots` texts of every intent (all it has if fewer), seeded, then shuffled so that no intent
    always sits next to the query: the `per-class` selection, the same examples for every query."""
    rng = random.Random(seed)
    chosen = [
        (text, label)
        for label in sorted(per_intent)
        for text in rng.sample(list(per_intent[label]), min(shots, len(per_intent[label])))
    ]
    rng.shuffle(chosen)
    return chosen


def _unquote(text: str) -> str:
    text = text.strip()
    if text.startswith("```") and text.endswith("```"):
        text = text.strip("`").removeprefix("json").strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'`":
        text = text[1:-1].strip()
    return text


def parse_answer(content: str | None, labels: Sequence[str]) -> str | None:
    """The label an answer names, or None when it names none exactly.

    Accepted: `{"intent": "<label>"}` (any JSON whitespace, optionally in a ``` fence) or the
    bare label, optionally quoted. The label must match one of `labels` exactly, or ignoring
    case when that is unambiguous. No substring or fuzzy matching: a model that answers
    "I think card_arrival" has not answered in the format, and guessing would flatter it.
    """
    if not content or not content.strip():
        return None
    text = _unquote(content)
    candidate: str | None = text
    try:
        parsed = json.loads(text)
    except ValueError:
        parsed = None
    if isinstance(parsed, dict):
        value = parsed.get("intent")
        candidate = value.strip() if isinstance(value, str) and len(parsed) == 1 else None
    elif isinstance(parsed, str):
        candidate = parsed.strip()
    elif parsed is not None and not isinstance(parsed, (int, float)):
        candidate = None  # a list, true, null ... is not a label (a number may be one: "42")
    if candidate is None:
        return None
    if candidate in labels:
        return candidate
    folded = [label for label in labels if label.lower() == candidate.lower()]
    return folded[0] if len(folded) == 1 else None
