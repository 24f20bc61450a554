"""Typed config: presets load, overrides apply, unknown keys and bad values are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.config import ConfigError, build_config, load_config

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("preset", sorted((REPO / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_presets_load_and_open_with_their_command(preset: Path) -> None:
    config = load_config(preset)
    assert config.model.method in {"qlora", "lora", "full"}
    head = preset.read_text().splitlines()[:6]
    assert any(f"--config configs/{preset.name}" in line for line in head), (
        "preset must open with its command"
    )


def test_llama_preset_is_the_qlora_recipe() -> None:
    config = load_config(REPO / "configs" / "llama-3.2-1b-qlora.yaml")
    assert config.model.base_model == "meta-llama/Llama-3.2-1B"
    assert config.model.method == "qlora"
    assert config.quantization.quant_type == "nf4" and config.quantization.double_quant
    assert config.lora.target_modules == "all-linear"
    assert config.optim.lr_scheduler == "cosine" and config.optim.early_stopping_patience > 0


def test_checkpoint_selection_needs_a_validation_split_large_enough_to_measure() -> None:
    from training.run_facts import checkpoint_choice

    config = load_config(REPO / "configs" / "minilm-cpu.yaml")
    assert config.optim.selection(1000) == (True, 2)  # Banking77's full validation split
    assert config.optim.selection(77) == (False, 0)  # a cold start's: one text per intent
    facts = checkpoint_choice(config, 77)
    assert facts["checkpoint"] == "last" and "77 texts" in facts["why_last"]
    assert checkpoint_choice(config, 1000) == {
        "checkpoint": "best_on_validation",
        "early_stopping_patience": 2,
    }
    lowered = build_config({}, ["optim.min_validation_for_selection=50", "optim.early_stopping_patience=1"])
    assert lowered.optim.selection(77) == (True, 1)
    plain = build_config({}, ["optim.select_best=false"])
    assert plain.optim.selection(5000) == (False, 0) and "why_last" not in checkpoint_choice(plain, 10)


def test_overrides_are_typed_and_nested() -> None:
    config = build_config({}, ["optim.learning_rate=3e-5", "model.method=lora", "lora.r=8", "output_dir=x"])
    assert config.optim.learning_rate == pytest.approx(3e-5)
    assert config.model.method == "lora" and config.lora.r == 8 and config.output_dir == "x"


@pytest.mark.parametrize(
    ("data", "overrides", "needle"),
    [
        ({"optim": {"lerning_rate": 1e-4}}, [], "unknown config key 'optim.lerning_rate'"),
        ({"modle": {}}, [], "unknown config key 'modle'"),
        ({}, ["model.method=sft"], "'model.method'"),
        ({}, ["optim.epochs=many"], "'optim.epochs'"),
        ({}, ["optim.epochs"], "section.key=value"),
    ],
)
def test_bad_config_names_the_key(data: dict, overrides: list[str], needle: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        build_config(data, overrides)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(bad)
