"""Model registry: numbered versions, aliases, promotion, rollback, crash leftovers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.registry import VERSION_FILE, Registry, RegistryError


def _model_dir(root: Path, name: str, accuracy: float) -> Path:
    d = root / name
    (d / "checkpoints" / "checkpoint-1").mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"]}))
    (d / "model.safetensors").write_bytes(b"weights-" + name.encode())
    metrics = {
        "test": {"accuracy": accuracy, "macro_f1": accuracy, "n": 10},
        "training": {"dataset": "sample", "dataset_fingerprint": "abc"},
    }
    (d / "metrics.json").write_text(json.dumps(metrics))
    return d


def test_register_promote_rollback(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    v1 = reg.register(_model_dir(tmp_path, "m1", 0.8), alias="champion")
    v2 = reg.register(_model_dir(tmp_path, "m2", 0.9), parent=v1.version, alias="challenger")
    assert [v.version for v in reg.versions()] == ["v0001", "v0002"]
    assert v2.meta["parent"] == "v0001" and v2.metrics["test"]["accuracy"] == 0.9
    assert not (v2.path / "checkpoints").exists(), "checkpoints stay out of the registry"
    assert reg.get("champion").version == "v0001" and reg.get("challenger").version == "v0002"
    assert reg.get("2").version == "v0002"

    reg.promote("challenger")
    assert reg.get("champion").version == "v0002"
    assert "challenger" not in reg.aliases()
    assert (reg.champion_path() / "model.safetensors").read_bytes() == b"weights-m2"

    assert reg.rollback().version == "v0001"
    assert reg.get("champion").version == "v0001"
    with pytest.raises(RegistryError, match="nothing to roll back"):
        reg.rollback()


def test_errors(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    with pytest.raises(RegistryError, match="no model is aliased"):
        reg.get("champion")
    with pytest.raises(RegistryError, match="no config"):
        reg.register(tmp_path)
    reg.register(_model_dir(tmp_path, "m1", 0.8))
    with pytest.raises(RegistryError, match="no model version"):
        reg.get("v0009")
    with pytest.raises(RegistryError, match="unknown alias"):
        reg.register(_model_dir(tmp_path, "m2", 0.9), alias="staging")
    assert [v.version for v in reg.versions()] == ["v0001"]  # refused before anything was copied


def test_interrupted_registration_leaves_no_version(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "reg")
    reg.register(_model_dir(tmp_path, "m1", 0.8), alias="champion")
    # a writer killed mid-copy leaves only a temporary directory behind
    leftover = reg.versions_dir / ".tmp-killed"
    leftover.mkdir()
    (leftover / "config.json").write_text("{}")
    assert [v.version for v in reg.versions()] == ["v0001"]
    assert reg.get("champion").version == "v0001"
    v2 = reg.register(_model_dir(tmp_path, "m2", 0.9))
    assert v2.version == "v0002" and not leftover.exists()
    assert json.loads((v2.path / VERSION_FILE).read_text())["version"] == "v0002"
