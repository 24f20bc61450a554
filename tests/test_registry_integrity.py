"""Registry integrity under injected faults: a deleted previous version, paths instead of version
names, corrupt registry files, the fsync before a version appears, and the registry's one
setting under two environment names (router and CLI)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from router.cli import app as cli
from router.settings import SettingsError, load_settings
from serving.registry import VERSION_FILE, Registry, RegistryCorrupt, RegistryError

runner = CliRunner()


def _model_dir(root: Path, name: str) -> Path:
    d = root / name
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"]}))
    (d / "model.safetensors").write_bytes(b"weights-" + name.encode())
    return d


def _two_champions(tmp_path: Path) -> Registry:
    reg = Registry(tmp_path / "reg")
    reg.register(_model_dir(tmp_path, "m1"), alias="champion")
    reg.register(_model_dir(tmp_path, "m2"), alias="champion")
    return reg


def test_rollback_to_a_deleted_version_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    reg = _two_champions(tmp_path)
    before = reg.aliases_file.read_bytes()
    import shutil

    shutil.rmtree(reg.versions_dir / "v0001")  # the fault: someone deleted the previous champion
    with pytest.raises(RegistryError, match=r"previous champion v0001 is missing .*champion stays v0002"):
        reg.rollback()
    assert reg.aliases_file.read_bytes() == before
    assert reg.get("champion").version == "v0002"
    result = runner.invoke(cli, ["models", "rollback", "--registry", str(reg.root)])
    assert result.exit_code == 2 and "previous champion v0001 is missing" in result.stderr
    assert "Traceback" not in result.output and reg.aliases_file.read_bytes() == before


def test_rollback_with_an_expected_champion_is_compare_and_set(tmp_path: Path) -> None:
    reg = _two_champions(tmp_path)
    with pytest.raises(RegistryError, match=r"champion changed to v0002 meanwhile"):
        reg.rollback(expected_champion="v0001")
    assert reg.get("champion").version == "v0002"
    assert reg.rollback(expected_champion="v0002").version == "v0001"


@pytest.mark.parametrize(
    "ref", ["../../etc", "/etc", "/tmp", "..", ".", "v0001/../../x", "versions/v0001", "", "v1", "٣"]
)
def test_get_accepts_version_names_only_never_paths(tmp_path: Path, ref: str) -> None:
    reg = _two_champions(tmp_path)
    with pytest.raises(RegistryError, match=r"not a model version.*paths are not accepted"):
        reg.get(ref)


def test_an_alias_that_names_a_path_is_corrupt_not_followed(tmp_path: Path) -> None:
    reg = _two_champions(tmp_path)
    reg.aliases_file.write_text(json.dumps({"champion": "../../../etc", "history": []}))
    with pytest.raises(RegistryCorrupt, match=r"aliases.json is corrupt \('champion' is '../../../etc'"):
        reg.get("champion")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        (b'{"champion": "v00', "not valid JSON"),
        (b"[1, 2]", "a JSON object expected, not list"),
        (b'{"champion": "v0002", "history": "v0001"}', "'history' must be a list"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_a_corrupt_aliases_file_is_a_clear_error_and_never_overwritten(
    tmp_path: Path, content: bytes, needle: str
) -> None:
    reg = _two_champions(tmp_path)
    reg.aliases_file.write_bytes(content)
    with pytest.raises(RegistryCorrupt, match=needle) as err:
        reg.get("champion")
    assert str(reg.aliases_file) in str(err.value)
    for write in (lambda: reg.promote("v0001"), reg.rollback):
        with pytest.raises(RegistryCorrupt):
            write()
    with pytest.raises(RegistryCorrupt):
        reg.register(_model_dir(tmp_path, "m3"), alias="challenger")
    assert reg.aliases_file.read_bytes() == content, "a writer must not paper over a corrupt file"
    result = runner.invoke(cli, ["models", "show", "champion", "--registry", str(reg.root)])
    assert result.exit_code == 2 and needle in result.stderr and "Traceback" not in result.output


def test_a_corrupt_version_file_is_a_clear_error(tmp_path: Path) -> None:
    reg = _two_champions(tmp_path)
    (reg.versions_dir / "v0001" / VERSION_FILE).write_text("{oops")
    with pytest.raises(RegistryCorrupt, match=r"version file .*v0001.* is corrupt"):
        reg.get("v0001")


def test_weights_and_directories_are_fsynced_before_the_version_appears(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real fsync and rename run; they are only watched, to check their order."""
    reg = Registry(tmp_path / "reg")
    events: list[tuple[str, str]] = []
    real_fsync, real_rename, real_open = os.fsync, os.rename, os.open
    names: dict[int, str] = {}

    def watched_open(path: str | Path, flags: int, *args: int) -> int:
        fd = real_open(path, flags, *args)
        names[fd] = str(path)
        return fd

    def watched_fsync(fd: int) -> None:
        events.append(("fsync", names.get(fd, "?")))
        real_fsync(fd)

    def watched_rename(src: str | Path, dst: str | Path) -> None:
        events.append(("rename", str(dst)))
        real_rename(src, dst)

    monkeypatch.setattr(os, "open", watched_open)
    monkeypatch.setattr(os, "fsync", watched_fsync)
    monkeypatch.setattr(os, "rename", watched_rename)
    reg.register(_model_dir(tmp_path, "m1"), alias="champion")
    rename = events.index(("rename", str(reg.versions_dir / "v0001")))
    synced_before = [p for kind, p in events[:rename] if kind == "fsync"]
    assert any(p.endswith("model.safetensors") for p in synced_before), events
    assert any(p.endswith("config.json") for p in synced_before), events
    assert any(Path(p).name.startswith(".tmp-") for p in synced_before), "the version's directory"
    assert ("fsync", str(reg.versions_dir)) in events[rename:], "the rename itself"
    assert ("fsync", str(reg.root)) in events[rename:], "aliases.json's directory entry"


# -- one setting, two environment names ------------------------------------------------------------


def test_the_router_reads_either_name_and_refuses_two_registries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SWITCHBOARD_REGISTRY_DIR", raising=False)
    monkeypatch.setenv("SWITCHBOARD_REGISTRY", str(tmp_path / "a"))
    assert load_settings().registry_dir == tmp_path / "a", "the CLI's name must reach the router"
    monkeypatch.setenv("SWITCHBOARD_REGISTRY_DIR", str(tmp_path / "a"))
    assert load_settings().registry_dir == tmp_path / "a"
    monkeypatch.setenv("SWITCHBOARD_REGISTRY_DIR", str(tmp_path / "b"))
    with pytest.raises(SettingsError, match="name different registries"):
        load_settings()
    assert load_settings(registry_dir=tmp_path / "c").registry_dir == tmp_path / "c", "explicit wins"


def test_the_cli_reads_either_name_and_refuses_two_registries(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    reg = _two_champions(tmp_path)
    monkeypatch.delenv("SWITCHBOARD_REGISTRY", raising=False)
    for name in ("SWITCHBOARD_REGISTRY_DIR", "SWITCHBOARD_REGISTRY"):
        result = runner.invoke(cli, ["models", "show", "champion"], env={name: str(reg.root)})
        assert result.exit_code == 0 and "v0002" in result.output, (name, result.output)
    both = {"SWITCHBOARD_REGISTRY_DIR": str(reg.root), "SWITCHBOARD_REGISTRY": str(tmp_path / "other")}
    result = runner.invoke(cli, ["models", "show", "champion"], env=both)
    assert result.exit_code == 2 and "name different registries" in result.stderr
    assert result.stderr.strip().count("\n") == 0
    # an explicit --registry wins; the environment is not consulted
    result = runner.invoke(cli, ["models", "show", "champion", "--registry", str(reg.root)], env=both)
    assert result.exit_code == 0, result.output


def test_polling_without_a_registry_is_a_settings_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SWITCHBOARD_REGISTRY_DIR", raising=False)
    monkeypatch.delenv("SWITCHBOARD_REGISTRY", raising=False)
    with pytest.raises(SettingsError, match="registry_poll_s needs registry_dir"):
        load_settings(registry_poll_s=5)
    with pytest.raises(SettingsError, match="gpu_memory_utilization"):
        load_settings(gpu_memory_utilization=0.9)
