"""deploy/compose.yaml (GPU) and deploy/compose.cpu.yaml: parsed, every `SWITCHBOARD_*` variable
a real setting and the router's environment settings it accepts (the admin token from a compose
secret, the review inbox on), ports and volumes as the Dockerfiles declare them, and the wiring
between the services (database URL, Prometheus target and rule files, Grafana's data source and
dashboards)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr
from support.deploy import (
    DEPLOY,
    DOCKERFILE,
    dockerfile,
    setting_env_names,
    settings_from_env,
    unknown_settings,
)

from router.settings import ENV_PREFIX, Settings

# keys are test ids: not "gpu", which conftest.py takes for the `gpu` marker and skips without CUDA
COMPOSE = {"nvidia": DEPLOY / "compose.yaml", "cpu": DEPLOY / "compose.cpu.yaml"}
RULES = DEPLOY / "prometheus" / "rules"


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}` / `${VAR}` with nothing set: the defaults."""
    return re.sub(r"\$\{(\w+)(?::?-([^}]*))?\}", lambda m: m[2] or "", value)


def services(path: Path) -> dict[str, dict[str, Any]]:
    """The file's services with `extends` resolved (a shallow merge, as the services here need)."""
    out: dict[str, dict[str, Any]] = {}
    for name, service in yaml.safe_load(path.read_text())["services"].items():
        if "extends" in service:
            base = services(path.parent / service["extends"]["file"])[service["extends"]["service"]]
            service = {**base, **{k: v for k, v in service.items() if k != "extends"}}
        out[name] = service
    return out


def compose(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())  # type: ignore[no-any-return]


def router_image(variant: str) -> dict[str, Any]:
    build = services(COMPOSE[variant])["router"]["build"]
    path = (COMPOSE[variant].parent / build["context"] / build["dockerfile"]).resolve()
    assert path.is_file(), path
    return dockerfile(path)


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """target -> source of a service's short-syntax volumes."""
    out = {}
    for spec in service.get("volumes", []):
        source, target, *_ = interpolate(spec).split(":")
        out[target] = source
    return out


def published(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port."""
    return {int(c): int(h) for h, c in (p.split(":") for p in service.get("ports", []))}


def secret_files(path: Path, service: str = "router") -> dict[str, Path]:
    """Where a service's compose secrets appear in its container -> the file each is read from
    (a file secret is bind-mounted at /run/secrets/<target or name>)."""
    declared = compose(path).get("secrets", {})
    out = {}
    for spec in services(path)[service].get("secrets", []):
        name = spec if isinstance(spec, str) else spec["source"]
        target = name if isinstance(spec, str) else spec.get("target", name)
        assert "file" in declared[name], f"secret {name} is not read from a file"
        out[str(Path("/run/secrets") / target)] = (path.parent / declared[name]["file"]).resolve()
    return out


def secret_settings() -> set[str]:
    """The environment names of the settings that hold a secret (typed SecretStr)."""
    return {
        f"{ENV_PREFIX}{name.upper()}"
        for name, field in Settings.model_fields.items()
        if "SecretStr" in str(field.annotation)
    }


def prometheus_config(path: Path) -> dict[str, Any]:
    return yaml.safe_load(compose(path)["configs"]["prometheus"]["content"])  # type: ignore[no-any-return]


@pytest.fixture(params=sorted(COMPOSE))
def variant(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_the_files_parse_with_the_four_services(variant: str) -> None:
    assert set(services(COMPOSE[variant])) == {"router", "postgres", "prometheus", "grafana"}
    data = compose(COMPOSE[variant])
    for service in services(COMPOSE[variant]).values():
        for target, source in mounts(service).items():
            if not source.startswith((".", "/")):
                assert source in data["volumes"], f"named volume {source} ({target}) is not declared"


def test_every_switchboard_variable_is_a_router_setting(variant: str) -> None:
    for name, service in services(COMPOSE[variant]).items():
        assert unknown_settings(service.get("environment", {})) == set(), name
    # the router's variables are all its own: none set for nothing
    assert set(services(COMPOSE[variant])["router"]["environment"]) <= setting_env_names()


def router_env(variant: str, tmp_path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """The router's environment as the container sees it (the image's ENV overlaid with the
    compose file's), each secret's mount path replaced by a file of `tmp_path` holding a token;
    and mount path -> that token."""
    image = router_image(variant)
    router = services(COMPOSE[variant])["router"]
    env = {k: v for k, v in image["env"].items() if k.startswith("SWITCHBOARD_")}
    env |= {k: interpolate(str(v)) for k, v in router["environment"].items()}
    tokens = {}
    for i, target in enumerate(secret_files(COMPOSE[variant])):
        tokens[target] = f"compose-secret-{i}-0123456789abcdef"
        local = tmp_path / f"secret-{i}"
        local.write_text(tokens[target] + "\n")  # as `print(...) > file` writes it
        env = {k: str(local) if v == target else v for k, v in env.items()}
    return env, tokens


def test_the_router_accepts_its_environment(
    variant: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The image's ENV defaults overlaid with the compose file's, as the container sees them."""
    router, postgres = (services(COMPOSE[variant])[s] for s in ("router", "postgres"))
    settings = settings_from_env(router_env(variant, tmp_path)[0], monkeypatch)
    url = re.fullmatch(r"postgresql://(\w+):([^@]+)@(\w+):(\d+)/(\w+)", settings.database_url)
    assert url, settings.database_url
    pg = {k: interpolate(str(v)) for k, v in postgres["environment"].items()}
    assert (url[1], url[2], url[5]) == (pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], pg["POSTGRES_DB"])
    assert (url[3], url[4]) == ("postgres", "5432")
    assert router["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert settings.log_spool_dir is not None and settings.log_spool_dir.is_relative_to("/data")
    grace = float(router["stop_grace_period"].removesuffix("s"))
    assert grace > settings.shutdown_timeout_s, "docker would SIGKILL the router within its shutdown budget"


def test_the_admin_token_comes_from_a_secret_and_opens_the_review_inbox(
    variant: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """No secret in the compose file: the admin token is a compose secret read from an ignored
    file under deploy/secrets/, named by SWITCHBOARD_ADMIN_TOKEN_FILE; the review inbox is on."""
    environment = services(COMPOSE[variant])["router"]["environment"]
    assert not set(environment) & secret_settings(), "a secret written into the compose file"
    mounted = secret_files(COMPOSE[variant])
    token_file = environment[f"{ENV_PREFIX}ADMIN_TOKEN_FILE"]
    assert token_file in mounted, f"{token_file} is none of the router's secrets"
    source = mounted[token_file]
    assert source.parent == DEPLOY / "secrets"
    assert "*" in (source.parent / ".gitignore").read_text().splitlines(), "the token could be committed"

    env, tokens = router_env(variant, tmp_path)
    settings = settings_from_env(env, monkeypatch)
    assert settings.admin_token == SecretStr(tokens[token_file])  # the final newline dropped
    assert settings.review_ui is True


def test_router_ports_and_volumes_agree_with_its_dockerfile(variant: str) -> None:
    image = router_image(variant)
    router = services(COMPOSE[variant])["router"]
    assert set(published(router)) == image["ports"] == {int(image["env"]["SWITCHBOARD_PORT"])}
    targets = set(mounts(router))
    # every mount is one of the image's volumes or inside one, and every volume is mounted
    assert all(any(Path(t).is_relative_to(v) for v in image["volumes"]) for t in targets), targets
    assert all(any(Path(t).is_relative_to(v) for t in targets) for v in image["volumes"]), targets
    assert image["env"]["SWITCHBOARD_MODEL_DIR"] in targets
    assert mounts(router)["/data"] == "router-data"


def test_the_cpu_image_is_laid_out_as_the_gpu_image() -> None:
    gpu, cpu = dockerfile(DOCKERFILE), router_image("cpu")
    assert (cpu["ports"], cpu["volumes"], cpu["uid"]) == (gpu["ports"], gpu["volumes"], gpu["uid"])
    switchboard = {k: v for k, v in gpu["env"].items() if k.startswith("SWITCHBOARD_")}
    assert {k: cpu["env"].get(k) for k in switchboard} == switchboard
    assert router_image("nvidia") == gpu


def test_gpu_only_where_there_is_one() -> None:
    gpu = services(COMPOSE["nvidia"])["router"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"]
    cpu = services(COMPOSE["cpu"])["router"]
    assert "deploy" not in cpu and "ipc" not in cpu
    for name in ("postgres", "prometheus", "grafana"):
        assert services(COMPOSE["cpu"])[name] == services(COMPOSE["nvidia"])[name], name


def test_prometheus_scrapes_the_router_and_loads_every_shipped_rule_file(variant: str) -> None:
    config = prometheus_config(COMPOSE[variant])
    shipped = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    assert config["global"] == shipped["global"]
    (job,) = config["scrape_configs"]
    assert job["job_name"] == shipped["scrape_configs"][0]["job_name"] == "switchboard"
    (target,) = job["static_configs"][0]["targets"]
    host, port = target.split(":")
    router = services(COMPOSE[variant])["router"]
    assert host == "router" and int(port) in published(router)
    prometheus = services(COMPOSE[variant])["prometheus"]
    rules_dir = next(t for t, s in mounts(prometheus).items() if (DEPLOY / s).resolve() == RULES)
    loaded = {Path(f) for f in config["rule_files"]}
    assert loaded == {Path(rules_dir) / p.name for p in RULES.glob("*.yaml")}
    (cfg,) = prometheus["configs"]
    assert f"--config.file={cfg['target']}" in prometheus["command"]


def test_grafana_provisioning_finds_prometheus_and_the_dashboard(variant: str) -> None:
    grafana, prometheus = (services(COMPOSE[variant])[s] for s in ("grafana", "prometheus"))
    volumes = mounts(grafana)
    for source in volumes.values():
        if source.startswith("."):
            assert (DEPLOY / source).is_dir(), source
    datasources = DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml"
    (ds,) = yaml.safe_load(datasources.read_text())["datasources"]
    assert ds["url"] == f"http://prometheus:{next(iter(published(prometheus)))}"
    provider = yaml.safe_load(
        (DEPLOY / "grafana" / "provisioning" / "dashboards" / "switchboard.yaml").read_text()
    )
    path = provider["providers"][0]["options"]["path"]
    assert (DEPLOY / volumes[path]).resolve() == (DEPLOY / "grafana" / "dashboards").resolve()
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (DEPLOY / volumes[str(Path(home).parent)] / Path(home).name).is_file()


@pytest.mark.skipif(
    shutil.which("docker") is None
    or subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0,
    reason="docker compose not installed",
)
def test_docker_compose_accepts_the_files(variant: str) -> None:
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE[variant]), "config", "--quiet"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
