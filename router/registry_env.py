"""The registry's directory from the environment: one setting, two accepted names.

`SWITCHBOARD_REGISTRY_DIR` is the canonical name (every router setting is `SWITCHBOARD_` + its
name, here `registry_dir`); `SWITCHBOARD_REGISTRY`, which the CLI's `--registry` and older docs
used, is accepted as an alias by the router and by every CLI command. Setting both to different
directories is an error, so neither can be silently ignored: one process must not serve one
registry while a retrain in the same environment writes another. Imports nothing heavy (the CLI
checks it on every command that takes `--registry`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

REGISTRY_ENV = "SWITCHBOARD_REGISTRY_DIR"
REGISTRY_ENV_ALIAS = "SWITCHBOARD_REGISTRY"


class RegistryEnvError(ValueError):
    """The two names of the registry setting disagree."""


def registry_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The registry directory the environment names (either name), or None.

    Raises `RegistryEnvError` when both are set to different directories."""
    env = os.environ if environ is None else environ
    canonical = env.get(REGISTRY_ENV) or None
    alias = env.get(REGISTRY_ENV_ALIAS) or None
    if canonical and alias and Path(canonical).absolute() != Path(alias).absolute():
        raise RegistryEnvError(
            f"{REGISTRY_ENV}={canonical!r} and {REGISTRY_ENV_ALIAS}={alias!r} name different "
            f"registries; they are one setting: set {REGISTRY_ENV} only"
        )
    return canonical or alias
