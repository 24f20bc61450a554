"""Prices from a data file (`data/prices.yaml`), and the cost arithmetic of the benchmark.

Prices live in a file, not in code, because they change more often than the code does and a
reader should see where each number came from and when it was read. `--prices PATH` swaps
the whole table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from serving.files import read_yaml_mapping

__all__ = [
    "DEFAULT_PRICES",
    "HardwarePrice",
    "PriceError",
    "PriceTable",
    "TokenPrice",
    "hourly_cost_per_million",
    "load_prices",
]

DEFAULT_PRICES = Path(__file__).resolve().parents[2] / "data" / "prices.yaml"
MILLION = 1_000_000


class PriceError(ValueError):
    """A price file that cannot be used; the message is one line naming the file and key."""


@dataclass(frozen=True)
class TokenPrice:
    """US dollars per 1M tokens."""

    input: float
    output: float
    cached_input: float | None = None

    def cost(self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0) -> float:
        """Dollars for one call; cached prompt tokens at the cached rate when there is one."""
        cached = min(cached_tokens, prompt_tokens) if self.cached_input is not None else 0
        cached_rate = self.cached_input if self.cached_input is not None else self.input
        return (
            (prompt_tokens - cached) * self.input + cached * cached_rate + completion_tokens * self.output
        ) / MILLION


@dataclass(frozen=True)
class HardwarePrice:
    name: str
    per_hour: float
    what: str = ""


@dataclass(frozen=True)
class PriceTable:
    llm: dict[str, TokenPrice]
    llm_source: str
    llm_read_on: str
    hardware: dict[str, HardwarePrice]
    hardware_default: str | None
    hardware_source: str
    path: str

    def for_model(self, model: str) -> TokenPrice | None:
        """The price of `model`, or of the longest listed name it starts with
        (`gpt-4o-mini-2024-07-18` -> `gpt-4o-mini`); None when not listed."""
        if model in self.llm:
            return self.llm[model]
        prefixes = [name for name in self.llm if model.startswith(name + "-")]
        return self.llm[max(prefixes, key=len)] if prefixes else None

    def default_hardware(self) -> HardwarePrice | None:
        return self.hardware.get(self.hardware_default or "")


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise PriceError(f"{where}: expected a non-negative number, got {value!r}")
    return float(value)


def load_prices(path: str | Path | None = None) -> PriceTable:
    """Read a price file (default `data/prices.yaml`); :class:`PriceError` on a bad one."""
    file = Path(path) if path is not None else DEFAULT_PRICES
    if not file.is_file():
        raise PriceError(f"cannot read price file {file}: not found")
    raw = read_yaml_mapping(
        file, PriceError, what="price file", expected="a mapping with `llm` and/or `hardware`"
    )

    llm_section = raw.get("llm") or {}
    llm: dict[str, TokenPrice] = {}
    for name, entry in (llm_section.get("models") or {}).items():
        where = f"{file}: llm.models.{name}"
        if not isinstance(entry, dict) or "input" not in entry or "output" not in entry:
            raise PriceError(f"{where}: needs `input` and `output` (USD per 1M tokens)")
        cached = entry.get("cached_input")
        llm[str(name)] = TokenPrice(
            input=_number(entry["input"], f"{where}.input"),
            output=_number(entry["output"], f"{where}.output"),
            cached_input=None if cached is None else _number(cached, f"{where}.cached_input"),
        )

    hw_section = raw.get("hardware") or {}
    hardware: dict[str, HardwarePrice] = {}
    for name, entry in (hw_section.get("instances") or {}).items():
        where = f"{file}: hardware.instances.{name}"
        if not isinstance(entry, dict) or "per_hour" not in entry:
            raise PriceError(f"{where}: needs `per_hour` (USD)")
        hardware[str(name)] = HardwarePrice(
            str(name), _number(entry["per_hour"], f"{where}.per_hour"), str(entry.get("what", ""))
        )
    default = hw_section.get("default")
    if default is not None and default not in hardware:
        raise PriceError(f"{file}: hardware.default {default!r} is not one of the instances")
    return PriceTable(
        llm=llm,
        llm_source=str(llm_section.get("source", "")),
        llm_read_on=str(llm_section.get("read_on", "")),
        hardware=hardware,
        hardware_default=default,
        hardware_source=str(hw_section.get("source", "")),
        path=str(file),
    )


def hourly_cost_per_million(queries_per_second: float, price_per_hour: float) -> float:
    """Dollars per 1M queries for a machine that answers `queries_per_second` flat out.

    This is the cost at full utilisation: a real deployment idles part of the time, so it is
    a lower bound for a dedicated machine (and fair for a shared, autoscaled one).
    """
    if queries_per_second <= 0:
        raise ValueError("queries_per_second must be positive")
    return MILLION / queries_per_second / 3600.0 * price_per_hour
