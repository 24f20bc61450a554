"""deploy/kubernetes: every object valid against the Kubernetes schemas (kubernetes-validate,
offline, strict: unknown fields fail), the Prometheus Operator objects against the structure
their CRDs define for the fields used here, and the cross-references a schema cannot see:
selectors, ports, Services, secrets, volumes, env names, probe paths, the shutdown budget, the
autoscalers' metric, the PrometheusRule equal to the shipped rule files, and each CronJob's
`switchboard` command parsed by the real CLI."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from support.deploy import DEPLOY, dockerfile, load_all, settings_from_env, unknown_settings
from support.docs import cli, simple_commands, switchboard_args

from router.cli.intents import when
from router.metrics import RouterMetrics
from router.routes.health import router as health_router
from router.settings import Settings, SettingsError

K8S = DEPLOY / "kubernetes"
KUBE_VERSION = "1.30"  # the oldest Kubernetes the manifests target (autoscaling/v2, policy/v1)
NOT_RESOURCES = {"kustomization.yaml", "prometheus-adapter-values.yaml"}
EXAMPLES = {p.name for p in K8S.glob("*.example.yaml")}  # valid objects, not applied by kustomization
MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name not in NOT_RESOURCES)
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
ROUTER_PORT = 8000


def objects() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in load_all(path)]


def one(kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def workloads() -> dict[str, dict[str, Any]]:
    """name -> pod template spec of every Deployment and CronJob."""
    out: dict[str, dict[str, Any]] = {}
    for o in objects():
        if o["kind"] == "Deployment":
            out[o["metadata"]["name"]] = o["spec"]["template"]
        elif o["kind"] == "CronJob":
            out[o["metadata"]["name"]] = o["spec"]["jobTemplate"]["spec"]["template"]
    return out


def cronjobs() -> dict[str, dict[str, Any]]:
    """name -> the one container of each CronJob's pod."""
    out = {}
    for o in objects():
        if o["kind"] == "CronJob":
            (c,) = o["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
            out[o["metadata"]["name"]] = c
    return out


def container(deployment: str) -> dict[str, Any]:
    (c,) = one("Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    return c


def env_values(c: dict[str, Any]) -> dict[str, str]:
    """A container's plain env values with `$(VAR)` references expanded as the kubelet does."""
    out: dict[str, str] = {}
    for var in c.get("env", []):
        if "value" in var:
            out[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: out.get(m[1], m[0]), var["value"])
    return out


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def prestop_sleep(c: dict[str, Any]) -> float:
    command = c["lifecycle"]["preStop"]["exec"]["command"]
    assert command[0] == "sleep", command
    return float(command[1])


# ------------------------------------------------------------------ schemas


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_every_object_is_valid_against_the_kubernetes_schema(path: Path) -> None:
    docs = load_all(path)
    assert docs, f"{path.name} holds no object"
    for doc in docs:
        if doc["kind"] in CRD_KINDS:
            continue  # no core schema: test_prometheus_operator_objects_have_the_crd_structure
        try:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            where = "/".join(str(p) for p in err.caught_exc.path)
            pytest.fail(
                f"{path.name}: {doc['kind']}/{doc['metadata']['name']} at {where}: {err.caught_exc.message}"
            )


def test_a_broken_object_is_caught_by_the_validation() -> None:
    """The check above can fail: an unknown field and a wrong type are refused."""
    deployment = one("Deployment", "switchboard-router")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSION, strict=True)
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSION, strict=True)


def test_kustomization_applies_every_manifest_but_the_examples() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in MANIFESTS} - EXAMPLES
    assert kustomization["namespace"] == "switchboard"


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed (kustomize is built in)")
def test_kustomize_builds_them_into_the_namespace() -> None:
    """What `kubectl apply -k deploy/kubernetes` would send: every object, in the namespace, valid."""
    result = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    built = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    assert len(built) == sum(len(load_all(K8S / name)) for name in listed)
    for doc in built:
        assert doc["metadata"]["namespace"] == "switchboard", doc["metadata"]["name"]
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "switchboard"
        if doc["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


# The CRDs' OpenAPI schemas (monitoring.coreos.com/v1) are large and not vendored here: these are
# the parts of them the shipped objects use, written out with their types and required keys, and
# closed (additionalProperties: false) so a misspelt field fails as the API server would refuse it.
_DURATION = {"type": "string", "pattern": r"^(0|(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$"}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {"name": {"type": "string", "minLength": 1}, "labels": _STR_MAP},
    "additionalProperties": False,
}
_RULE = {
    "type": "object",
    "required": ["expr"],
    "properties": {
        "record": {"type": "string"},
        "alert": {"type": "string"},
        "expr": {"type": ["string", "integer"]},
        "for": _DURATION,
        "keep_firing_for": _DURATION,
        "labels": _STR_MAP,
        "annotations": _STR_MAP,
    },
    "oneOf": [{"required": ["record"]}, {"required": ["alert"]}],
    "additionalProperties": False,
}
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "PrometheusRule": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "PrometheusRule"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "properties": {
                    "groups": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name"],
                            "properties": {
                                "name": {"type": "string", "minLength": 1},
                                "interval": _DURATION,
                                "limit": {"type": "integer"},
                                "rules": {"type": "array", "items": _RULE},
                            },
                            "additionalProperties": False,
                        },
                    }
                },
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    },
    "ServiceMonitor": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "kind": {"const": "ServiceMonitor"},
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["selector"],
                "properties": {
                    "jobLabel": {"type": "string"},
                    "selector": {
                        "type": "object",
                        "properties": {"matchLabels": _STR_MAP},
                        "additionalProperties": False,
                    },
                    "endpoints": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string"},
                                "scheme": {"enum": ["http", "https"]},
                                "interval": _DURATION,
                                "scrapeTimeout": _DURATION,
                            },
                            "additionalProperties": False,
                        },
                    },
                },
                "additionalProperties": False,
            },
        },
        "additionalProperties": False,
    },
}


def test_prometheus_operator_objects_have_the_crd_structure() -> None:
    found = [o for o in objects() if o["kind"] in CRD_KINDS]
    assert sorted(o["kind"] for o in found) == sorted(CRD_KINDS)
    for obj in found:
        jsonschema.validate(obj, CRD_SCHEMAS[obj["kind"]])
    bad = yaml.safe_load(yaml.safe_dump(one("ServiceMonitor", "switchboard")))
    bad["spec"]["endpoints"][0]["intervall"] = "15s"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, CRD_SCHEMAS["ServiceMonitor"])


# ------------------------------------------------------------------ the rules


def test_prometheusrule_carries_exactly_the_shipped_rules() -> None:
    rule_files = sorted((DEPLOY / "prometheus" / "rules").glob("*.yaml"))
    shipped = [group for path in rule_files for group in yaml.safe_load(path.read_text())["groups"]]
    generated = one("PrometheusRule", "switchboard")["spec"]["groups"]
    # every group of every rule file, nothing else (two files may name a group alike)
    key = lambda group: json.dumps(group, sort_keys=True)  # noqa: E731
    assert sorted(generated, key=key) == sorted(shipped, key=key)
    assert len(generated) == len(shipped)
    result = subprocess.run(
        [sys.executable, str(K8S / "build_prometheusrule.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_prometheusrule_spec_loads_in_prometheus(tmp_path: Path) -> None:
    """The Operator hands the resource's spec to Prometheus as one rule file: promtool must accept
    it (a group name repeated across the recording and alert files made it refuse the lot), and the
    builder refuses such a repeat before writing."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump(one("PrometheusRule", "switchboard")["spec"], sort_keys=False))
    ok = subprocess.run([promtool, "check", "rules", str(spec)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    groups = one("PrometheusRule", "switchboard")["spec"]["groups"]
    spec.write_text(yaml.safe_dump({"groups": [*groups, groups[0]]}, sort_keys=False))
    bad = subprocess.run([promtool, "check", "rules", str(spec)], capture_output=True, text=True)
    assert bad.returncode != 0 and "repeated" in (bad.stdout + bad.stderr)


def test_the_alerts_job_is_the_scraped_services_name() -> None:
    """The Prometheus Operator labels the routers' series job=<Service name>; the alerts select it."""
    alerts = (DEPLOY / "prometheus" / "rules" / "switchboard-alerts.yaml").read_text()
    jobs = set(re.findall(r'up\{job="([^"]+)"\}', alerts))
    monitor = one("ServiceMonitor", "switchboard")
    services = [
        o
        for o in objects()
        if o["kind"] == "Service"
        and selects(monitor["spec"]["selector"]["matchLabels"], o["metadata"]["labels"])
    ]
    assert [s["metadata"]["name"] for s in services] == sorted(jobs) == ["switchboard"]
    assert "jobLabel" not in monitor["spec"]
    ports = {p["name"] for p in services[0]["spec"]["ports"]}
    for endpoint in monitor["spec"]["endpoints"]:
        assert endpoint["port"] in ports
        assert endpoint["path"] == "/metrics"
    rule = one("PrometheusRule", "switchboard")
    assert rule["metadata"]["labels"]["release"] == monitor["metadata"]["labels"]["release"]


# ------------------------------------------------------------------ cross-references


def test_selectors_pick_their_own_pods() -> None:
    pods = {name: t["metadata"]["labels"] for name, t in workloads().items()}
    for o in objects():
        kind, name = o["kind"], o["metadata"]["name"]
        if kind == "Deployment":
            assert selects(o["spec"]["selector"]["matchLabels"], pods[name]), name
        if kind in {"Service", "PodDisruptionBudget"}:
            selector = o["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            chosen = [w for w, labels in pods.items() if selects(selector, labels)]
            assert len(chosen) == 1, f"{kind}/{name} selects {chosen}"
            assert chosen[0] not in cronjobs(), f"{kind}/{name} selects the job {chosen[0]}"


def test_services_reach_a_named_container_port() -> None:
    pods = workloads()
    for svc in (o for o in objects() if o["kind"] == "Service"):
        (target,) = [t for t in pods.values() if selects(svc["spec"]["selector"], t["metadata"]["labels"])]
        ports = {p["name"]: p["containerPort"] for c in target["spec"]["containers"] for p in c["ports"]}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in ports, svc["metadata"]["name"]


def test_router_port_and_volumes_agree_with_the_dockerfile() -> None:
    image = dockerfile()
    c = container("switchboard-router")
    assert {p["containerPort"] for p in c["ports"]} == image["ports"] == {ROUTER_PORT}
    assert env_values(c)["SWITCHBOARD_PORT"] == str(ROUTER_PORT)
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert mounts == image["volumes"]
    pod = one("Deployment", "switchboard-router")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == image["uid"]


def test_every_switchboard_variable_is_a_router_setting() -> None:
    for name, template in workloads().items():
        for c in template["spec"]["containers"]:
            names = [v["name"] for v in c.get("env", [])]
            assert unknown_settings(names) == set(), f"{name}/{c['name']}"
            assert len(names) == len(set(names)), f"{name}/{c['name']} sets a variable twice"


def test_the_router_settings_load_from_its_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The Deployment's environment (secrets filled in) is settings the router accepts, serving
    the remote engine at the vLLM Service and the version the vLLM Deployment serves."""
    c = container("switchboard-router")
    env = env_values(c)
    secrets = {
        "SWITCHBOARD_DATABASE_URL": "postgresql://u:p@db:5432/s",
        "SWITCHBOARD_ADMIN_TOKEN": "x" * 32,
        "SWITCHBOARD_SESSION_SECRET": "y" * 32,
    }
    assert set(secrets) == {v["name"] for v in c["env"] if "valueFrom" in v}
    settings = settings_from_env({**env, **secrets}, monkeypatch)
    assert c["args"] == ["--engine", "remote"]
    vllm = container("switchboard-vllm")
    url = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", settings.engine_url or "")
    assert url, settings.engine_url
    service = one("Service", url[1])
    assert int(url[2]) in {p["port"] for p in service["spec"]["ports"]}
    assert selects(
        service["spec"]["selector"],
        one("Deployment", "switchboard-vllm")["spec"]["template"]["metadata"]["labels"],
    )
    version = env_values(vllm)["MODEL_VERSION"]
    assert env_values(c)["MODEL_VERSION"] == version
    assert settings.model_dir == Path(f"/models/registry/versions/{version}")
    assert settings.registry_dir == Path("/models/registry")
    assert settings.model_dir.parent.parent == settings.registry_dir
    served = [a for a in vllm["args"] if not a.startswith("-")]
    assert served == ["/models/registry/versions/$(MODEL_VERSION)"]
    assert "--runner=pooling" in vllm["args"]
    # the routers follow the registry (rollouts, the champion), but their engine must serve the
    # version: a new champion is served once switchboard-vllm is rolled to it, never before
    assert settings.registry_poll_s > 0
    assert settings.engine_served_model == version
    challenger = re.fullmatch(r"http://([a-z0-9-]+):(\d+)", settings.challenger_engine_url or "")
    assert challenger, settings.challenger_engine_url
    assert selects(
        one("Service", challenger[1])["spec"]["selector"],
        one("Deployment", "switchboard-vllm-challenger")["spec"]["template"]["metadata"]["labels"],
    )


def test_the_admin_token_is_a_required_secret_and_opens_the_review_inbox(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The routers do not start without the switchboard-admin Secret (no `optional`): the admin
    endpoints and the review inbox are on, and every replica signs /review sessions with one key.
    The example Secret's placeholders are refused, so it cannot be applied unedited."""
    refs = {
        v["name"]: v["valueFrom"]["secretKeyRef"]
        for v in container("switchboard-router")["env"]
        if "secretKeyRef" in v.get("valueFrom", {})
    }
    example = one("Secret", "switchboard-admin")
    names = ("SWITCHBOARD_ADMIN_TOKEN", "SWITCHBOARD_SESSION_SECRET")
    for name in names:
        assert refs[name]["name"] == "switchboard-admin" and not refs[name].get("optional"), name
        assert refs[name]["key"] in example["stringData"], name
    assert env_values(container("switchboard-router"))["SWITCHBOARD_REVIEW_UI"] == "true"
    assert one("Deployment", "switchboard-router")["spec"]["replicas"] > 1  # hence the shared key
    placeholders = {name: example["stringData"][refs[name]["key"]] for name in names}
    with pytest.raises(SettingsError, match="at least 16"):
        settings_from_env({**placeholders, "SWITCHBOARD_REVIEW_UI": "true"}, monkeypatch)


def test_secrets_volumes_and_env_references_resolve() -> None:
    examples = {o["metadata"]["name"]: o for path in EXAMPLES for o in load_all(K8S / path)}
    claims = {o["metadata"]["name"] for o in objects() if o["kind"] == "PersistentVolumeClaim"}
    for name, template in workloads().items():
        spec = template["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        for v in volumes.values():
            if "persistentVolumeClaim" in v:
                assert v["persistentVolumeClaim"]["claimName"] in claims, name
        for c in spec["containers"]:
            defined: set[str] = set()
            for var in c.get("env", []):
                for ref in re.findall(r"\$\((\w+)\)", var.get("value", "")):
                    assert ref in defined, f"{name}: {var['name']} uses $({ref}) before it is set"
                defined.add(var["name"])
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref and not ref.get("optional"):  # required: an example shows how to create it
                    assert ref["key"] in examples[ref["name"]]["stringData"], f"{name}: {var['name']}"
            for arg in c.get("args", []):
                for ref in re.findall(r"(?<!\$)\$\((\w+)\)", arg):  # $$(...) is the shell's, escaped
                    assert ref in defined, f"{name}: an argument uses $({ref})"
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in volumes, f"{name}: mount {mount['name']}"
    assert one("Deployment", "switchboard-router")["spec"]["template"]["spec"]["volumes"][0][
        "persistentVolumeClaim"
    ]
    assert one("PersistentVolumeClaim", "switchboard-models")["spec"]["accessModes"] == ["ReadWriteMany"]


def test_probes_are_the_routers_health_endpoints() -> None:
    paths = {route.path for route in health_router.routes}  # type: ignore[attr-defined]
    c = container("switchboard-router")
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert {"/readyz", "/livez"} <= paths
    named = {p["name"] for p in c["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        assert c[probe]["httpGet"]["port"] in named
    vllm = container("switchboard-vllm")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert vllm[probe]["httpGet"]["path"] == "/health"  # what serving/remote.py checks too
    assert '"/health"' in (DEPLOY.parent / "serving" / "remote.py").read_text()


def test_grace_period_covers_prestop_and_the_shutdown_budget() -> None:
    """The kubelet counts terminationGracePeriodSeconds from the start of preStop; SIGTERM comes
    after it, and the router needs up to shutdown_timeout_s from SIGTERM."""
    deployment = one("Deployment", "switchboard-router")["spec"]["template"]["spec"]
    c = container("switchboard-router")
    env = env_values(c)
    default = Settings.model_fields["shutdown_timeout_s"].default
    budget = float(env.get("SWITCHBOARD_SHUTDOWN_TIMEOUT_S", default))
    delay = float(env.get("SWITCHBOARD_SHUTDOWN_DELAY_S", Settings.model_fields["shutdown_delay_s"].default))
    assert delay < budget
    sleep = prestop_sleep(c)
    assert sleep > 0, "without a preStop sleep the Service still routes to a stopping pod"
    assert deployment["terminationGracePeriodSeconds"] > sleep + budget
    vllm = one("Deployment", "switchboard-vllm")["spec"]["template"]["spec"]
    assert vllm["terminationGracePeriodSeconds"] > prestop_sleep(container("switchboard-vllm"))


def test_gpus_go_to_vllm_and_retrain_only() -> None:
    """The discovery job embeds on CPU (training.discovery loads the champion there): no GPU."""
    for name, template in workloads().items():
        for c in template["spec"]["containers"]:
            resources = c["resources"]
            assert "memory" in resources["requests"] and "memory" in resources["limits"], name
            gpus = resources["limits"].get("nvidia.com/gpu")
            if name in {"switchboard-router", "switchboard-discover"}:
                assert gpus is None, name
                assert "nvidia.com/gpu" not in resources["requests"], name
            else:
                assert gpus == resources["requests"]["nvidia.com/gpu"] == "1", name


def test_autoscalers_scale_on_the_routers_in_flight_gauge() -> None:
    exported = {m.name for m in RouterMetrics().registry.collect()}
    assert "switchboard_in_flight_requests" in exported
    adapter = yaml.safe_load((K8S / "prometheus-adapter-values.yaml").read_text())["rules"]
    served = {
        kind: {r["name"]["as"]: re.match(r"(\w+)", r["seriesQuery"])[1] for r in adapter[kind]}  # type: ignore[index]
        for kind in ("custom", "external")
    }
    # every Deployment that answers customers scales; a rollout's challenger engine is one pod
    deployments = {
        o["metadata"]["name"]
        for o in objects()
        if o["kind"] == "Deployment" and o["metadata"]["name"] != "switchboard-vllm-challenger"
    }
    hpas = [o for o in objects() if o["kind"] == "HorizontalPodAutoscaler"]
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas} == deployments
    for hpa in hpas:
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
        for metric in hpa["spec"]["metrics"]:
            kind = {"Pods": "custom", "External": "external"}[metric["type"]]
            name = metric[metric["type"].lower()]["metric"]["name"]
            assert served[kind][name] in exported, f"{hpa['metadata']['name']}: {name}"
    max_in_flight = int(env_values(container("switchboard-router"))["SWITCHBOARD_MAX_IN_FLIGHT"])
    router_target = one("HorizontalPodAutoscaler", "switchboard-router")["spec"]["metrics"][0]["pods"]
    assert float(router_target["target"]["averageValue"]) < max_in_flight


# ------------------------------------------------------------------ the jobs' commands


def cli_context(args: list[str]) -> Any:
    """`switchboard ARGS` parsed by the real CLI's click tree as a run would parse it (unknown
    options, bad types and out-of-range values fail), without running the command."""
    import typer

    command = cli()
    ctx = typer.Context(command, info_name="switchboard")
    name = "switchboard"
    while hasattr(command, "list_commands"):  # a group: the next word names a command of it
        assert args, f"`{ctx.command_path}` needs a command"
        name, args = args[0], args[1:]
        sub = command.get_command(ctx, name)
        assert sub is not None, f"`{ctx.command_path}` has no command {name!r}"
        if hasattr(sub, "list_commands"):
            ctx = typer.Context(sub, parent=ctx, info_name=name)
        command = sub
    return command.make_context(name, list(args), parent=ctx)


def job_invocation(c: dict[str, Any]) -> list[str]:
    """The `switchboard` arguments a CronJob's container runs: its command and args, or the
    `switchboard` command of an `sh -c` script."""
    words = [*c["command"], *c.get("args", [])]
    if words[:2] == ["sh", "-c"]:
        found = [a for cmd in simple_commands(words[2]) if (a := switchboard_args(cmd)) is not None]
    else:
        found = [a for a in [switchboard_args(words)] if a is not None]
    assert len(found) == 1, f"{c['name']}: {len(found)} switchboard commands in {words}"
    return found[0]


def test_every_cronjob_runs_a_real_switchboard_command() -> None:
    jobs = cronjobs()
    assert set(jobs) == {"switchboard-retrain", "switchboard-discover"}
    for name, c in jobs.items():
        cli_context(job_invocation(c))
        env = env_values(c)
        assert env["SWITCHBOARD_REGISTRY_DIR"] == "/models/registry", name
        assert [v["name"] for v in c["env"] if "valueFrom" in v] == ["SWITCHBOARD_DATABASE_URL"], name
        assert {m["mountPath"] for m in c["volumeMounts"]} >= {"/models"}, name
    # the check can fail: a misspelt option, a value out of the option's range
    with pytest.raises(Exception, match="No such option: --sinse"):
        cli_context(["intents", "discover", "--sinse", "7d"])
    with pytest.raises(Exception, match="greater than or equal to 2"):
        cli_context(["intents", "discover", "--min-size", "1"])


def test_the_discovery_job_reads_the_last_week_daily_beside_the_retrain() -> None:
    """`switchboard intents discover --since 7d --no-progress` on the retrain's image (it needs
    the training install), daily at another hour than the retrain, the registry read-only."""
    discover, retrain = cronjobs()["switchboard-discover"], cronjobs()["switchboard-retrain"]
    args = job_invocation(discover)
    assert args[:2] == ["intents", "discover"]
    params = cli_context(args).params
    now = datetime.now(UTC)
    assert when(params["since"], now) == now - timedelta(days=7) and params["until"] is None
    assert params["progress"] is False
    assert discover["image"] == retrain["image"]
    (mount,) = discover["volumeMounts"]
    assert mount["readOnly"] is True
    schedules = {
        name: one("CronJob", name)["spec"]["schedule"].split()
        for name in ("switchboard-discover", "switchboard-retrain")
    }
    for fields in schedules.values():
        assert fields[2:] == ["*", "*", "*"] and fields[0].isdigit() and fields[1].isdigit(), fields
    assert schedules["switchboard-discover"][:2] != schedules["switchboard-retrain"][:2]
    spec = one("CronJob", "switchboard-discover")["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"


# ------------------------------------------------------------------ the ONNX Runtime router variant

ONNX_VARIANT = K8S / "variants" / "router-onnx-deployment.yaml"


def test_the_onnx_router_variant_is_valid_and_replaces_the_router_deployment() -> None:
    """Not in kustomization.yaml (it would be a second router Deployment): applied after the base,
    it replaces the vLLM router's Deployment, so the router Service, PDB and autoscaler select it."""
    (variant,) = load_all(ONNX_VARIANT)
    kubernetes_validate.validate(variant, KUBE_VERSION, strict=True)
    assert ONNX_VARIANT.name not in (K8S / "kustomization.yaml").read_text()
    base = one("Deployment", "switchboard-router")
    assert variant["metadata"]["name"] == base["metadata"]["name"]
    assert variant["metadata"]["namespace"] == "switchboard"  # applied with -f, not through kustomize
    assert variant["spec"]["selector"] == base["spec"]["selector"]
    labels = variant["spec"]["template"]["metadata"]["labels"]
    assert selects(base["spec"]["template"]["metadata"]["labels"], labels)
    for kind, name in (("Service", "switchboard"), ("PodDisruptionBudget", "switchboard-router")):
        selector = one(kind, name)["spec"]["selector"]
        assert selects(selector.get("matchLabels", selector), labels), name
    hpa = one("HorizontalPodAutoscaler", "switchboard-router")["spec"]["scaleTargetRef"]
    assert (hpa["kind"], hpa["name"]) == ("Deployment", variant["metadata"]["name"])


def test_the_onnx_router_variant_serves_the_champion_on_onnx(monkeypatch: pytest.MonkeyPatch) -> None:
    (variant,) = load_all(ONNX_VARIANT)
    pod = variant["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["args"] == ["--engine", "onnx"]
    names = [v["name"] for v in c["env"]]
    assert unknown_settings(names) == set() and len(names) == len(set(names))
    secrets = {
        "SWITCHBOARD_DATABASE_URL": "postgresql://u:p@db:5432/s",
        "SWITCHBOARD_ADMIN_TOKEN": "x" * 32,
        "SWITCHBOARD_SESSION_SECRET": "y" * 32,
    }
    assert set(secrets) == {v["name"] for v in c["env"] if "valueFrom" in v}
    settings = settings_from_env({**env_values(c), **secrets}, monkeypatch)
    assert settings.model_dir is None and settings.registry_dir == Path("/models/registry")
    assert settings.registry_poll_s > 0  # follows the champion and rollouts: no engine server to roll
    assert settings.onnx_threads == int(c["resources"]["requests"]["cpu"]) - 1  # one for the event loop
    assert "nvidia.com/gpu" not in c["resources"]["limits"] and "limits" in c["resources"]
    image = dockerfile(DEPLOY / "Dockerfile.onnx")
    assert image["env"]["SWITCHBOARD_ENGINE"] == "onnx"
    assert {p["containerPort"] for p in c["ports"]} == image["ports"] == {ROUTER_PORT}
    assert {m["mountPath"] for m in c["volumeMounts"]} == image["volumes"]
    assert pod["securityContext"]["runAsUser"] == image["uid"]
    assert (
        c["readinessProbe"]["httpGet"]["path"] == "/readyz"
        and c["livenessProbe"]["httpGet"]["path"] == "/livez"
    )
    budget = float(env_values(c)["SWITCHBOARD_SHUTDOWN_TIMEOUT_S"])
    assert pod["terminationGracePeriodSeconds"] > prestop_sleep(c) + budget
    assert {v["name"] for v in pod["volumes"]} == {m["name"] for m in c["volumeMounts"]}
    claims = {o["metadata"]["name"] for o in objects() if o["kind"] == "PersistentVolumeClaim"}
    assert pod["volumes"][0]["persistentVolumeClaim"]["claimName"] in claims
