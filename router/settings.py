"""Router settings: defaults < YAML file < `SWITCHBOARD_*` environment < explicit overrides.

One typed object for everything the router reads at startup, so a typo in a YAML key or an
environment value fails at startup with the field named, instead of misbehaving under load.
The YAML file is optional (`switchboard serve --config settings.yaml`, or `SWITCHBOARD_CONFIG`).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings import SettingsError as _SourceError

from router.registry_env import REGISTRY_ENV, REGISTRY_ENV_ALIAS, RegistryEnvError, registry_from_env
from serving.files import read_yaml_mapping
from serving.registry import Registry, RegistryError

ENV_PREFIX = "SWITCHBOARD_"
MIN_TOKEN_CHARS = 16  # bearer tokens shorter than this are refused at startup
ADMIN_REVIEWER = "admin"  # the review inbox's name for whoever signs in with the admin token
REVIEWER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")


class SettingsError(ValueError):
    """Settings that cannot work, with the offending field (or file) named."""


class Settings(BaseSettings):
    """Every knob of `switchboard serve`; env var = `SWITCHBOARD_` + the upper-cased name."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", validate_default=True, protected_namespaces=()
    )

    # model and engine
    model_dir: Path | None = Field(None, description="Exported model directory to serve.")
    registry_dir: Path | None = Field(
        None,
        description="Model registry: serve its champion when model_dir is unset; reload/rollback "
        "(env SWITCHBOARD_REGISTRY_DIR, or its alias SWITCHBOARD_REGISTRY).",
    )
    registry_poll_s: float = Field(
        0.0,
        ge=0,
        description="Check the registry's champion alias this often and serve a new champion "
        "(promotion, rollback by any process); 0: off, reload with /v1/admin/reload.",
    )
    gpu_memory_utilization: float = Field(
        0.3,
        gt=0,
        le=0.33,
        description="Share of GPU memory each local vLLM engine may take; a rollout holds the champion "
        "and the challenger, and a hot swap a third engine meanwhile, so at most 0.33 (on CPU the "
        "engine keeps its own 0.3 of RAM).",
    )
    # live rollouts (serving.rollout, router.shadow, router.promotion)
    shadow_max_pending: int = Field(
        4, ge=1, description="Shadow engine calls in flight at most; past it shadow work is shed (counted)."
    )
    shadow_batch_max: int = Field(
        32, ge=1, description="Shadow texts sent to the engine in one call at most."
    )
    shadow_batch_wait_s: float = Field(
        0.02, ge=0, description="A shadow text waits at most this long for others to share its engine call."
    )
    shadow_shed_in_flight: int = Field(
        16, ge=1, description="Customer requests in flight from which shadow work is shed first."
    )
    canary_key: str = Field(
        "conversation_id",
        min_length=1,
        description="The request `metadata` key whose value pins a caller to the canary or the "
        "champion (hashed); requests without it are assigned one by one.",
    )
    rollout_auto: bool = Field(
        True, description="Decide rollouts on the evidence: shadow -> canary -> promote, or reject/roll back."
    )
    canary_share: float = Field(
        0.1, gt=0, lt=1, description="The share a shadow that wins goes to canary with."
    )
    canary_min_answers: int = Field(
        500, ge=1, description="Customer answers a canary gives (all replicas) before it may be promoted."
    )
    canary_max_error_rate: float = Field(
        0.02, ge=0, le=1, description="A canary whose engine fails more often than this is rolled back."
    )
    canary_max_latency_ratio: float = Field(
        2.0,
        gt=1,
        description="A canary whose median engine time per call passes this many times the "
        "champion's (this replica, since the canary began) is rolled back.",
    )
    admin_token: SecretStr | None = Field(
        None,
        description="Bearer token for /v1/admin/* and /v1/review (at least 16 characters); "
        "unset: those endpoints are off (404).",
    )
    admin_token_file: Path | None = Field(
        None,
        description="Read admin_token from this file instead (a Docker or Kubernetes secret; "
        "surrounding whitespace such as the final newline is dropped).",
    )
    # the review inbox (router.web): a web page for people who label queries
    review_ui: bool = Field(
        False, description="Serve the review inbox at /review (needs admin_token or review_tokens)."
    )
    review_tokens: dict[str, SecretStr] = Field(
        default_factory=dict,
        description="Reviewer name -> sign-in token for /review, each at least 16 characters "
        '(env: JSON, e.g. {"alice": "..."}); the admin token signs in as "admin".',
    )
    session_secret: SecretStr | None = Field(
        None,
        description="Key that signs /review session cookies (at least 16 characters); unset: a random "
        "key per process (sessions end at a restart and hold on one replica only).",
    )
    review_session_hours: float = Field(12.0, gt=0, le=720, description="A /review sign-in lasts this long.")
    engine: Literal["local", "remote", "onnx", "auto"] = Field(
        "local",
        description="local: in-process vLLM; remote: a `vllm serve` at engine_url; onnx: ONNX Runtime "
        "in-process (the model's ONNX export, CPU); auto: vLLM on a GPU, on a CPU the engine the "
        "export's measurement found faster (docs/ROUTER.md, Engines).",
    )
    onnx_threads: int = Field(
        0,
        ge=0,
        description="ONNX engine: intra-op threads of its session; 0: one fewer than the cores this "
        "process may use (CPU affinity, bounded by a cgroup CPU limit), at least 1.",
    )
    engine_url: str | None = Field(None, description="`vllm serve` base URL (remote engine).")
    engine_served_model: str | None = Field(
        None,
        description="Remote engine: the model name the server must serve (its --served-model-name, the "
        "registry version); checked before it answers a customer. Unset: not checked.",
    )
    challenger_engine_url: str | None = Field(
        None,
        description="Remote engine: the `vllm serve` of a rollout's challenger (it must serve the "
        "challenger's version as its model name); unset: no rollout with the remote engine.",
    )
    dtype: str = Field("auto", description="vLLM dtype: auto | float32 | bfloat16 | float16.")
    eager: bool = Field(False, description="vLLM enforce_eager: faster start, slower steady state.")
    max_num_seqs: int | None = Field(None, ge=1, description="vLLM scheduler batch cap.")

    # HTTP server
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    access_log: bool = Field(False, description="uvicorn access log (costs CPU per request).")
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    # routing policy
    routes_file: Path | None = Field(None, description="Route map YAML; default: the model's.")
    default_route: str | None = Field(None, description="Route for intents the map omits.")
    fallback_route: str | None = Field(None, description="Route for unsure / out-of-scope.")
    confidence_threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Fallback when top-1 < this; unset: the model's own out-of-scope threshold, else 0.5.",
    )
    margin: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Min top-1 minus top-2; unset: 0 with the model's out-of-scope threshold, else 0.1.",
    )
    oos_labels: Annotated[tuple[str, ...], NoDecode] = Field(
        ("oos",), description="Labels meaning out of scope (env: comma-separated)."
    )
    top_k: int = Field(3, ge=1, le=50, description="Alternatives returned per query.")

    # cascade: escalate unsure queries to a few-shot LLM (off unless escalation_model is set)
    escalation_model: str | None = Field(
        None, description="OpenAI-compatible chat model for unsure queries (e.g. gpt-4o-mini); unset: off."
    )
    escalation_base_url: str | None = Field(
        None, description="Its API base URL; unset: OPENAI_BASE_URL or api.openai.com."
    )
    escalation_api_key: SecretStr | None = Field(None, description="Its API key; unset: OPENAI_API_KEY.")
    escalation_threshold: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="Escalate when top-1 < this; unset: the fallback threshold in force.",
    )
    escalation_examples: Path | None = Field(
        None, description="Few-shot examples file for the prompt; unset: the model's own fewshot.json."
    )
    escalation_shots: int = Field(3, ge=0, le=50, description="Prompt examples per intent (0: zero-shot).")
    escalation_structured: Literal["auto", "on", "off"] = Field(
        "auto", description="Constrain answers with a JSON-schema enum (auto: if the server can)."
    )
    escalation_timeout_s: float = Field(
        5.0, gt=0, description="Per escalation; past it the tuned model's answer stands."
    )
    escalation_max_retries: int = Field(1, ge=0, le=10, description="Client retries on 429/5xx.")
    escalation_concurrency: int = Field(16, ge=1, description="Most escalations in flight at once.")
    escalation_budget_usd_per_hour: float = Field(
        0.0, ge=0, description="Escalation spend per hour the alert rules allow (0: no budget)."
    )
    prices_file: Path | None = Field(
        None, description="Token prices for the escalation cost; default data/prices.yaml."
    )

    # limits
    max_text_chars: int = Field(2000, ge=1, description="Longer texts are rejected with 422.")
    max_batch: int = Field(64, ge=1, le=10_000, description="Most texts per /v1/route/batch.")
    max_in_flight: int = Field(256, ge=1, description="Past this, requests get 429.")
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Larger request bodies get 413, before any is parsed."
    )
    body_timeout_s: float = Field(
        10.0, gt=0, description="A body not received within this gets 408 (slow clients hold no slot)."
    )
    ready_cache_s: float = Field(
        2.0, ge=0, description="/readyz reuses an engine check this recent (probes cost no classify)."
    )
    retry_after_s: int = Field(1, ge=0, description="Retry-After on 429 and 503.")
    request_timeout_s: float = Field(10.0, gt=0, description="Per request; past it: 504.")
    shutdown_timeout_s: float = Field(
        25.0, gt=0, description="One budget for a graceful stop: drain, log flush and engine close."
    )
    shutdown_delay_s: float = Field(
        0.0, ge=0, description="After SIGTERM, keep serving with /readyz 503 this long (within the budget)."
    )

    # request log and feedback store
    database_url: str = Field("sqlite:///switchboard.db", description="SQLAlchemy URL.")
    store_text: bool = Field(True, description="Log query texts (off: privacy).")
    log_flush_interval_s: float = Field(0.05, ge=0, description="Writer linger per batch.")
    log_batch_max: int = Field(1000, ge=1, description="Most rows per write transaction.")
    log_queue_max: int = Field(100_000, ge=1, description="Unwritten rows before 503s.")
    log_spool: bool = Field(True, description="Write answered rows to an on-disk spool until stored.")
    log_spool_dir: Path | None = Field(
        None, description="Spool directory; unset: beside a SQLite file, else ~/.local/state/switchboard."
    )
    log_spool_fsync_interval_s: float = Field(
        1.0, ge=0, description="fsync the spool at most this often (0: every write batch)."
    )
    database_connect_timeout_s: int = Field(5, ge=1, description="PostgreSQL connect_timeout (seconds).")
    accuracy_window: int = Field(
        500,
        ge=1,
        description="Labelled audit items per version in live accuracy (and feedback rows in "
        "the reviewed agreement).",
    )
    audit_rate: float = Field(
        0.02,
        ge=0,
        le=1,
        description="Share of requests marked for audit when answered: the random "
        "sample live accuracy is estimated from (GET /v1/review?strategy=audit).",
    )
    live_accuracy_refresh_s: float = Field(
        30.0, ge=0, description="Re-read live accuracy from the database this often (0: never)."
    )
    drift_window: int = Field(
        2000, ge=10, description="Routed queries in the intent-mix and confidence drift window."
    )

    @field_validator("admin_token", "session_secret")
    @classmethod
    def _strong_token(cls, value: SecretStr | None) -> SecretStr | None:
        """An empty token would make `Authorization: Bearer ` an admin: refuse it, and short ones."""
        return None if value is None else _strong_secret(value)

    @field_validator("review_tokens")
    @classmethod
    def _reviewers(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        """Reviewer names become feedback `source`s: short and plain; tokens as strong as the
        admin token and all different (a token names one reviewer)."""
        for name, token in value.items():
            if not REVIEWER_NAME.fullmatch(name):
                raise ValueError(
                    f"reviewer name {name!r}: use 1-64 letters, digits and _ . @ - (starting with a "
                    "letter or digit)"
                )
            if name == ADMIN_REVIEWER:
                raise ValueError(f"reviewer name {name!r} is the admin token's; choose another")
            try:
                _strong_secret(token)
            except ValueError as err:
                raise ValueError(f"token of {name!r} {err}") from None
        secrets_ = [t.get_secret_value() for t in value.values()]
        if len(set(secrets_)) != len(secrets_):
            raise ValueError("two reviewers share a token; give each their own")
        return value

    @field_validator("oos_labels", mode="before")
    @classmethod
    def _split_labels(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    def with_champion(self) -> Settings:
        """These settings with `model_dir` set: as given, or else the registry's champion.

        Reading the registry is I/O, so it happens here, when the app is built, not while the
        settings are validated; a registry without a champion is a `SettingsError`.
        """
        if self.model_dir is not None or self.registry_dir is None:
            return self
        try:
            champion = Registry(self.registry_dir).champion_path()
        except RegistryError as err:
            raise SettingsError(f"setting 'registry_dir': {err}") from None
        return self.model_copy(update={"model_dir": champion})

    @model_validator(mode="after")
    def _admin_token_from_file(self) -> Settings:
        """`admin_token_file`: the token read from the file. Defined before the validators that
        look at `admin_token`, so they see it; errors name the file, never its content."""
        if self.admin_token_file is None:
            return self
        if self.admin_token is not None:
            raise ValueError("set admin_token or admin_token_file (SWITCHBOARD_ADMIN_TOKEN_FILE), not both")
        self.admin_token = _secret_from_file(self.admin_token_file, "admin_token_file")
        return self

    @model_validator(mode="after")
    def _poll_needs_registry(self) -> Settings:
        if self.registry_poll_s and self.registry_dir is None:
            raise ValueError(
                f"registry_poll_s needs registry_dir ({REGISTRY_ENV}): there is no champion to watch"
            )
        return self

    @model_validator(mode="after")
    def _review_ui_needs_a_token(self) -> Settings:
        if self.review_ui and self.admin_token is None and not self.review_tokens:
            raise ValueError("review_ui needs admin_token or review_tokens: nobody could sign in")
        admin = self.admin_token.get_secret_value() if self.admin_token else None
        if admin is not None and any(t.get_secret_value() == admin for t in self.review_tokens.values()):
            raise ValueError("a review token equals admin_token; give reviewers their own tokens")
        return self

    @model_validator(mode="after")
    def _remote_needs_url(self) -> Settings:
        if self.engine == "remote" and not self.engine_url:
            raise ValueError("engine 'remote' needs engine_url (SWITCHBOARD_ENGINE_URL or --url)")
        return self

    @model_validator(mode="after")
    def _delay_within_budget(self) -> Settings:
        if self.shutdown_delay_s >= self.shutdown_timeout_s:
            raise ValueError(
                f"shutdown_delay_s ({self.shutdown_delay_s:g}) must be less than shutdown_timeout_s "
                f"({self.shutdown_timeout_s:g}): the delay is spent within that one budget"
            )
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The YAML file arrives through init kwargs (see load_settings) as the lowest layer.
        yaml_values = getattr(init_settings, "init_kwargs", {}).pop("_yaml_values", None) or {}
        return (
            init_settings,
            env_settings,
            _RegistryAliasSource(
                settings_cls, explicit="registry_dir" in getattr(init_settings, "init_kwargs", {})
            ),
            InitSettingsSource(settings_cls, init_kwargs=yaml_values),
        )


def _strong_secret(value: SecretStr) -> SecretStr:
    secret = value.get_secret_value()
    if not secret.strip():
        raise ValueError("must not be empty or blank (unset it to turn what it guards off)")
    if secret != secret.strip() or any(ch.isspace() for ch in secret):
        raise ValueError("must not contain whitespace")
    if len(secret) < MIN_TOKEN_CHARS:
        raise ValueError(
            f"is {len(secret)} characters; use at least {MIN_TOKEN_CHARS} "
            "(e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`)"
        )
    return value


def _secret_from_file(path: Path, setting: str) -> SecretStr:
    """A token kept in a file (a mounted secret), checked as `_strong_secret` checks one."""
    where = f"{setting} ({ENV_PREFIX}{setting.upper()}): {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"{where} does not exist") from None
    except UnicodeDecodeError:
        raise ValueError(f"{where} is not UTF-8 text") from None
    except OSError as err:
        raise ValueError(f"{where} cannot be read ({err.strerror})") from None
    if not text.strip():
        raise ValueError(f"{where} is empty")
    try:
        return _strong_secret(SecretStr(text.strip()))
    except ValueError as err:
        raise ValueError(f"{where}: the token {err}") from None


class _RegistryAliasSource(PydanticBaseSettingsSource):
    """`SWITCHBOARD_REGISTRY` as `registry_dir` (the CLI's name for the same setting), at the
    environment's priority; both names set to different directories is a `SettingsError`
    (unless `registry_dir` is given explicitly, which wins over both, as `--registry` does)."""

    def __init__(self, settings_cls: type[BaseSettings], *, explicit: bool) -> None:
        super().__init__(settings_cls)
        self.explicit = explicit

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if self.explicit:
            return {}
        try:
            value = registry_from_env()
        except RegistryEnvError as err:
            raise SettingsError(f"setting 'registry_dir': {err}") from None
        if value is None or os.environ.get(REGISTRY_ENV):
            return {}  # unset, or the canonical name, which the environment source reads
        return {"registry_dir": os.environ[REGISTRY_ENV_ALIAS]}


def load_settings(config_file: str | Path | None = None, **overrides: Any) -> Settings:
    """Settings from an optional YAML file, the environment and non-None `overrides` (CLI flags).

    `SWITCHBOARD_CONFIG` names the YAML file when `config_file` is not given.
    """
    path = config_file or os.environ.get(f"{ENV_PREFIX}CONFIG")
    yaml_values = (
        read_yaml_mapping(path, SettingsError, what="settings file", expected="a mapping of setting: value")
        if path
        else {}
    )
    explicit = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(_yaml_values=yaml_values, **explicit)  # type: ignore[call-arg]
    except ValidationError as err:
        raise SettingsError(_first_error(err, yaml_values, path)) from None
    except _SourceError as err:  # e.g. an environment value that should be JSON and is not
        raise SettingsError(str(err)) from None


def _first_error(err: ValidationError, yaml_values: dict[str, Any], path: object) -> str:
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"])
    if not field:
        return str(first["msg"]).removeprefix("Value error, ")
    where = f"{path}: " if path and field.split(".")[0] in yaml_values else ""
    if first["type"] == "extra_forbidden":
        return f"{where}unknown setting {field!r}"
    env = f" (env {ENV_PREFIX}{field.split('.')[0].upper()})"
    return f"{where}setting {field!r}{env}: {str(first['msg']).removeprefix('Value error, ')}"
