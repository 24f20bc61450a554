"""What the deployment tests (tests/test_deploy_*.py) check manifests against: the router's
setting names, the Dockerfile's port and volumes, the router's probe paths and exported series."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from router.registry_env import REGISTRY_ENV_ALIAS
from router.settings import ENV_PREFIX, Settings, load_settings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
DOCKERFILE = REPO / "Dockerfile"


def setting_env_names() -> set[str]:
    """Every `SWITCHBOARD_*` name the router reads: one per setting, the registry's alias, and
    the settings file (`SWITCHBOARD_CONFIG`). Others are silently ignored, hence this check."""
    names = {f"{ENV_PREFIX}{name.upper()}" for name in Settings.model_fields}
    return names | {REGISTRY_ENV_ALIAS, f"{ENV_PREFIX}CONFIG"}


def unknown_settings(names: Iterable[str]) -> set[str]:
    """The `SWITCHBOARD_*` names among `names` that are no setting."""
    return {n for n in names if n.startswith(ENV_PREFIX)} - setting_env_names()


def dockerfile(path: Path = DOCKERFILE) -> dict[str, Any]:
    """A Dockerfile's EXPOSEd ports, VOLUMEs, ENV defaults and user id (the few forms used here)."""
    text = path.read_text().replace("\\\n", " ")
    ports = {int(p) for line in re.findall(r"^EXPOSE (.+)$", text, re.M) for p in line.split()}
    volume_lines = re.findall(r"^VOLUME \[(.+)\]$", text, re.M)
    volumes = {v for line in volume_lines for v in re.findall(r'"([^"]+)"', line)}
    env = dict(re.findall(r"(\w+)=(\S+)", " ".join(re.findall(r"^ENV (.+)$", text, re.M))))
    user = re.findall(r"useradd .*--uid (\d+)", text)
    return {"ports": ports, "volumes": volumes, "env": env, "uid": int(user[0]) if user else None}


def load_all(path: Path) -> list[dict[str, Any]]:
    """The YAML documents of `path` (empty ones dropped)."""
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def settings_from_env(env: Mapping[str, str], monkeypatch: Any) -> Settings:
    """The router's settings as it would build them from exactly `env` (no other SWITCHBOARD_*)."""
    for name in list(os.environ):
        if name.startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return load_settings()
