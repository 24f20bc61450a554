"""How numbers read in tables, reports and the CLI: one percent formatter for all of them."""

from __future__ import annotations


def pct(value: object, digits: int = 2) -> str:
    """0.9432 -> '94.32%' (digits=2) or '94.3%' (digits=1); None or a non-number -> 'n/a'."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "n/a"
    return f"{100.0 * value:.{digits}f}%"
