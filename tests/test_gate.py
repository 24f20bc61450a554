"""The promotion gate's statistics (deterministic cases) and the registry's retrain guards."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.registry import Registry, RegistryError
from training.gate import compare, examples_needed, significantly_better, significantly_worse_than


def _pairs(both: int, only_champion: int, only_challenger: int, neither: int = 0) -> tuple[list, list]:
    champ = [True] * both + [True] * only_champion + [False] * only_challenger + [False] * neither
    chall = [True] * both + [False] * only_champion + [True] * only_challenger + [False] * neither
    return champ, chall


def test_better_on_16_examples_by_chance_is_not_significant() -> None:
    cmp = compare(*_pairs(0, 7, 9))  # the challenger wins 9 of 16 disagreements
    assert cmp.difference == pytest.approx(0.125)
    assert cmp.p_better == pytest.approx(0.40181, abs=1e-5)  # exact binomial tail, 9+ of 16
    assert not significantly_better(cmp)
    assert cmp.ci_low < 0 < cmp.ci_high
    needed = examples_needed(cmp)
    assert needed is not None and needed > 100  # at 9:7, only a much larger sample would tell


def test_a_clear_improvement_is_significant_and_its_interval_excludes_zero() -> None:
    cmp = compare(*_pairs(80, 1, 14, 5))
    assert cmp.n == 100 and (cmp.only_champion, cmp.only_challenger) == (1, 14)
    assert cmp.p_better < 0.001 and significantly_better(cmp)
    assert cmp.difference == pytest.approx(0.13)
    assert 0 < cmp.ci_low < cmp.difference < cmp.ci_high
    assert examples_needed(cmp) == 100  # already enough


def test_worse_than_the_margin_only_when_the_evidence_says_so() -> None:
    clearly = compare(*_pairs(950, 30, 0))  # -3 points on 980 examples
    assert significantly_worse_than(clearly, 0.005) and not significantly_worse_than(clearly, 0.05)
    noise = compare(*_pairs(970, 6, 4))  # -0.2 points, 10 disagreements
    assert not significantly_worse_than(noise, 0.005)


def test_no_disagreement_and_not_ahead() -> None:
    same = compare(*_pairs(10, 0, 0, 2))
    assert same.difference == 0 and same.p_better == 1.0 and not significantly_better(same)
    behind = compare(*_pairs(10, 5, 2))
    assert examples_needed(behind) is None  # more of the same would never show it better
    with pytest.raises(ValueError):
        compare([True], [True, False])


def _model(root: Path, name: str) -> Path:
    path = root / name
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"id2label": {"0": "a", "1": "b"}}))
    return path


def test_a_second_retrain_refuses_to_start(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    with (
        registry.retrain_lock(),
        pytest.raises(RegistryError, match="already running"),
        Registry(tmp_path / "reg").retrain_lock(),
    ):
        pass
    with registry.retrain_lock():  # released: the next one runs
        pass


def test_promotion_checks_the_champion_the_gate_compared_against(tmp_path: Path) -> None:
    registry = Registry(tmp_path / "reg")
    v1 = registry.register(_model(tmp_path, "m1"), alias="champion")
    v2 = registry.register(_model(tmp_path, "m2"))
    v3 = registry.register(_model(tmp_path, "m3"))
    registry.promote(v2.version)  # someone promoted by hand while the retrain ran
    assert not registry.promote_if_champion(v3.version, v1.version)
    assert registry.get("champion").version == v2.version
    assert registry.promote_if_champion(v3.version, v2.version)
    assert registry.get("champion").version == v3.version
