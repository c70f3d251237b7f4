"""The metric names a PromQL expression reads: a small tokenizer, not a full PromQL parser.

Strings, label matchers ``{...}``, ranges ``[...]``, grouping clauses (``by (...)``, ``on (...)``...)
durations and Grafana variables are dropped first; of the identifiers left, a function is one followed by ``(``,
and keywords, set operators and numbers are not names.
"""

from __future__ import annotations

import re

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_BRACES = re.compile(r"\{[^}]*\}")
_RANGES = re.compile(r"\[[^\]]*\]")
_VARIABLES = re.compile(r"\$\{?\w+\}?")
_DURATIONS = re.compile(r"(?<![\w:])(?:\d+(?:ms|s|m|h|d|w|y))+\b")
_NUMBERS = re.compile(r"(?<![\w:])(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+|inf|nan)\b", re.IGNORECASE)
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_KEYWORDS = frozenset(
    "by without on ignoring group_left group_right bool and or unless offset atan2 inf nan".split()
)
_AGGREGATORS = frozenset(
    "sum min max avg group stddev stdvar count count_values bottomk topk quantile limitk limit_ratio".split()
)


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects (``x_bucket`` stays ``x_bucket``: the series asked for)."""
    text = _STRINGS.sub(" ", expr)
    text = _VARIABLES.sub(" ", text)
    text = _RANGES.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _BRACES.sub(" ", text)
    text = _DURATIONS.sub(" ", text)
    text = _NUMBERS.sub(" ", text)
    names: set[str] = set()
    for match in _IDENTIFIER.finditer(text):
        word = match.group()
        if word.lower() in _KEYWORDS or word in _AGGREGATORS:
            continue
        if re.match(r"\s*\(", text[match.end():]):
            continue  # a function call
        names.add(word)
    return names
