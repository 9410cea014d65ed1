"""deploy/k8s: renders with Kustomize, validates against Kubernetes schemas, and is safe to run.

Every check runs on the base and on the example overlay (the overlay only where kubectl is
installed: without it the base's files are read directly).
"""

from __future__ import annotations

import tomllib
from typing import Any

import kubernetes_validate
import pytest
from starlette.routing import Route

from orchestrator.receiver.app import create_app
from orchestrator.routing import RoutingTable
from orchestrator.settings import Settings, env_names
from tests.fixtures.deploy import (
    K8S_TARGETS,
    REPO,
    SECRET_NAME,
    THIRD_PARTY_ENV,
    beat_keeps_a_schedule_file,
    by_kind,
    check_cli_argv,
    check_stop_signal,
    component,
    configmap_data,
    container_env,
    deployment,
    k8s_resources,
    kubectl,
    option_value,
    pod_spec,
    render_kustomize,
    soft_shutdown_timeout,
    workloads,
)

# Oldest and newest Kubernetes minor versions the manifests are checked against.
KUBERNETES_VERSIONS = ("1.29.0", "1.37.0")
SECRET_NAME_IN_CLUSTER = "scaivault-rotator"
#: The Prometheus Operator's API group (PodMonitor, PrometheusRule): no Kubernetes schema.
OPERATOR_API = "monitoring.coreos.com/"


@pytest.fixture(params=K8S_TARGETS)
def docs(request: pytest.FixtureRequest) -> tuple[dict[str, Any], ...]:
    return k8s_resources(request.param)


def _containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    spec = pod_spec(workload)
    return [*spec.get("initContainers", []), *spec["containers"]]


def _main(workload: dict[str, Any]) -> dict[str, Any]:
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1
    return dict(containers[0])


def _port(container: dict[str, Any], port: int | str) -> int:
    if isinstance(port, int):
        return port
    return next(int(p["containerPort"]) for p in container["ports"] if p["name"] == port)


def _get_routes() -> set[str]:
    settings = Settings.load(SCAIVAULT_WEBHOOK_SECRET="whsec_test_only")
    app = create_app(settings)
    return {r.path for r in app.routes if isinstance(r, Route) and r.methods and "GET" in r.methods}


def _task_time_limit(docs: tuple[dict[str, Any], ...]) -> int:
    settings = configmap_data(docs, "scaivault-rotator-settings")
    default = Settings.model_fields["rotator_task_time_limit"].default
    return int(settings.get("ROTATOR_TASK_TIME_LIMIT", default))


@pytest.mark.skipif(kubectl() is None, reason="kubectl is not installed")
@pytest.mark.parametrize("target", K8S_TARGETS)
def test_kustomize_renders(target: str) -> None:
    kinds = {doc["kind"] for doc in render_kustomize(target)}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy"} <= kinds


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_resources_validate_against_kubernetes_schemas(
    docs: tuple[dict[str, Any], ...], version: str
) -> None:
    for doc in docs:
        if doc["apiVersion"].startswith(OPERATOR_API):
            continue  # the Operator's custom resources: tests/unit/deploy/test_deploy_monitoring.py
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(map(str, exc.path))
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} at {where}: {exc.message}")


def test_schema_validation_rejects_a_broken_resource(docs: tuple[dict[str, Any], ...]) -> None:
    broken = {**deployment(docs, "beat"), "spec": {"replicas": "one", "selector": {}}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[-1], strict=True)


def test_every_container_is_non_root_read_only_and_unprivileged(
    docs: tuple[dict[str, Any], ...],
) -> None:
    for workload in workloads(docs):
        spec = pod_spec(workload)
        pod = spec.get("securityContext", {})
        assert spec.get("automountServiceAccountToken") is False
        assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault"
        for container in _containers(workload):
            name = f"{workload['metadata']['name']}/{container['name']}"
            ctx = container.get("securityContext", {})
            assert ctx.get("runAsNonRoot", pod.get("runAsNonRoot")) is True, name
            assert ctx.get("runAsUser", pod.get("runAsUser", 0)) != 0, name
            assert ctx.get("readOnlyRootFilesystem") is True, name
            assert ctx.get("allowPrivilegeEscalation") is False, name
            assert ctx.get("privileged", False) is False, name
            assert "ALL" in ctx.get("capabilities", {}).get("drop", []), name
            assert not ctx.get("capabilities", {}).get("add"), name


def test_every_container_has_resource_requests_and_limits(
    docs: tuple[dict[str, Any], ...],
) -> None:
    for workload in workloads(docs):
        for container in _containers(workload):
            resources = container.get("resources", {})
            for kind in ("requests", "limits"):
                assert set(resources.get(kind, {})) >= {"cpu", "memory"}, container["name"]


def test_images_are_pinned_to_the_project_version(docs: tuple[dict[str, Any], ...]) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    for workload in workloads(docs):
        assert workload["metadata"]["labels"]["app.kubernetes.io/version"] == version["version"]
        for container in _containers(workload):
            image = container["image"]
            tag = image.rsplit("/", 1)[-1].partition(":")[2]
            assert tag == version["version"], f"{image}: pin the release this tree builds"


def test_commands_match_the_cli(docs: tuple[dict[str, Any], ...]) -> None:
    for workload in workloads(docs):
        for container in _containers(workload):
            assert "command" not in container, "keep the image's ENTRYPOINT (scaivault-rotator)"
            env = {k: v or "from-a-secret" for k, v in container_env(docs, container).items()}
            problem = check_cli_argv(container["args"], env)
            assert problem is None, f"{workload['metadata']['name']}: {problem}"


def test_every_pod_restarts_after_any_exit(docs: tuple[dict[str, Any], ...]) -> None:
    for workload in workloads(docs):
        assert pod_spec(workload).get("restartPolicy", "Always") == "Always", workload["kind"]


def test_roles_are_one_each_of_receiver_worker_beat(docs: tuple[dict[str, Any], ...]) -> None:
    roles = {component(w): _main(w)["args"][0] for w in workloads(docs)}
    assert roles == {"receiver": "serve", "worker": "worker", "beat": "beat"}


def test_receiver_probes_point_at_real_endpoints(docs: tuple[dict[str, Any], ...]) -> None:
    receiver = _main(deployment(docs, "receiver"))
    listen = int(option_value(receiver["args"], "--port") or 0)
    assert option_value(receiver["args"], "--host") == "0.0.0.0"
    routes = _get_routes()
    expected = {"livenessProbe": "/healthz", "readinessProbe": "/readyz"}
    for probe, path in expected.items():
        check = receiver[probe]["httpGet"]
        assert check["path"] == path and path in routes
        assert _port(receiver, check["port"]) == listen
    startup = receiver.get("startupProbe", {}).get("httpGet")
    assert startup is None or (
        startup["path"] in routes and _port(receiver, startup["port"]) == listen
    )


def test_receiver_service_reaches_the_receiver(docs: tuple[dict[str, Any], ...]) -> None:
    receiver = deployment(docs, "receiver")
    listen = int(option_value(_main(receiver)["args"], "--port") or 0)
    labels = receiver["spec"]["template"]["metadata"]["labels"]
    services = [
        s for s in by_kind(docs, "Service") if s["spec"]["selector"].items() <= labels.items()
    ]
    assert len(services) == 1
    for port in services[0]["spec"]["ports"]:
        assert _port(_main(receiver), port["targetPort"]) == listen


def test_selectors_match_their_pod_templates(docs: tuple[dict[str, Any], ...]) -> None:
    for workload in workloads(docs):
        selector = workload["spec"]["selector"]["matchLabels"]
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items(), workload["metadata"]["name"]


def test_worker_grace_period_outlasts_soft_shutdown_and_task_time_limit(
    docs: tuple[dict[str, Any], ...],
) -> None:
    worker = deployment(docs, "worker")
    grace = pod_spec(worker)["terminationGracePeriodSeconds"]
    assert grace > _task_time_limit(docs) + soft_shutdown_timeout()
    assert check_stop_signal(container_env(docs, _main(worker))) is None


def test_worker_metrics_port_is_the_setting(docs: tuple[dict[str, Any], ...]) -> None:
    worker = _main(deployment(docs, "worker"))
    env = container_env(docs, worker)
    default = Settings.model_fields["rotator_metrics_port"].default
    assert _port(worker, "metrics") == int(env.get("ROTATOR_METRICS_PORT") or default)


@pytest.mark.parametrize("role", ["worker", "beat"])
def test_worker_and_beat_liveness_is_the_heartbeat_probe(
    docs: tuple[dict[str, Any], ...], role: str
) -> None:
    container = _main(deployment(docs, role))
    command = container["livenessProbe"]["exec"]["command"]
    assert command == ["scaivault-rotator", "health", role]
    env = {k: v or "from-a-secret" for k, v in container_env(docs, container).items()}
    assert check_cli_argv(command[1:], env) is None
    probe = container["livenessProbe"]
    interval = Settings.model_fields["rotator_heartbeat_interval"].default
    assert probe["timeoutSeconds"] >= 5, "the probe is a Python process: give it time to start"
    assert probe["periodSeconds"] * probe["failureThreshold"] > 6 * interval


def test_beat_is_a_single_replica_that_is_never_doubled(docs: tuple[dict[str, Any], ...]) -> None:
    beat = deployment(docs, "beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    assert not [d for d in by_kind(docs, "HorizontalPodAutoscaler") if "beat" in str(d)]
    if beat_keeps_a_schedule_file():
        mounts = {m["mountPath"] for m in _main(beat).get("volumeMounts", [])}
        assert "/var/lib/scaivault-rotator" in mounts, "beat's schedule file needs a volume"


def test_secrets_are_referenced_never_committed(docs: tuple[dict[str, Any], ...]) -> None:
    assert by_kind(docs, "Secret") == [], "no Secret objects (with values) in the manifests"
    referenced: set[str] = set()
    for workload in workloads(docs):
        spec = pod_spec(workload)
        secret_mounts = {
            m["mountPath"]
            for c in spec["containers"]
            for m in c.get("volumeMounts", [])
            for v in spec.get("volumes", [])
            if v["name"] == m["name"] and "secret" in v
        }
        for container in _containers(workload):
            for item in container.get("env", []):
                name = item["name"]
                if name.endswith("_FILE"):
                    assert any(item["value"].startswith(p + "/") for p in secret_mounts), name
                    referenced.add(name.removesuffix("_FILE"))
                elif SECRET_NAME.search(name) or name == "REDIS_URL":
                    ref = item.get("valueFrom", {}).get("secretKeyRef", {})
                    assert ref.get("name") == SECRET_NAME_IN_CLUSTER, (
                        f"{name} must come from a Secret"
                    )
                    referenced.add(name)
    assert referenced >= {"SCAIVAULT_TOKEN", "SCAIVAULT_WEBHOOK_SECRET", "ROTATOR_SEAL_KEY"}
    for data in (d.get("data", {}) for d in by_kind(docs, "ConfigMap")):
        assert not [k for k in data if SECRET_NAME.search(k)], "a secret in a ConfigMap"


def test_every_environment_variable_is_a_known_setting(docs: tuple[dict[str, Any], ...]) -> None:
    known = set(env_names()) | set(THIRD_PARTY_ENV)
    for workload in workloads(docs):
        for container in _containers(workload):
            unknown = set(container_env(docs, container)) - known
            assert not unknown, f"{workload['metadata']['name']} sets unknown {unknown}"


def test_routing_configmap_is_a_valid_routing_file(docs: tuple[dict[str, Any], ...]) -> None:
    data = configmap_data(docs, "scaivault-rotator-routing")
    table = RoutingTable.parse(data["rotation.toml"], source="rotation.toml")
    assert table.rules
    settings = configmap_data(docs, "scaivault-rotator-settings")
    for workload in workloads(docs):
        mounts = [m["mountPath"] for m in _main(workload).get("volumeMounts", [])]
        assert settings["ROTATOR_CONFIG"].rsplit("/", 1)[0] in mounts


def test_disruption_budgets_protect_receiver_and_worker(docs: tuple[dict[str, Any], ...]) -> None:
    budgets = by_kind(docs, "PodDisruptionBudget")
    for role in ("receiver", "worker"):
        workload = deployment(docs, role)
        labels = workload["spec"]["template"]["metadata"]["labels"]
        matching = [
            b for b in budgets if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]
        assert len(matching) == 1, role
        spec = matching[0]["spec"]
        # A budget that can never be met blocks every node drain.
        assert spec.get("minAvailable", 0) < workload["spec"]["replicas"] or spec.get(
            "maxUnavailable"
        )


def test_network_policy_denies_by_default_and_opens_only_service_ports(
    docs: tuple[dict[str, Any], ...],
) -> None:
    policies = by_kind(docs, "NetworkPolicy")
    default = [
        p
        for p in policies
        if set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        and not p["spec"].get("ingress")
        and not p["spec"].get("egress")
    ]
    assert default, "no default-deny policy"
    assert default[0]["spec"]["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "scaivault-rotator"
    }
    open_ports: dict[str, set[int]] = {}
    for policy in policies:
        role = policy["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/component", "")
        for rule in policy["spec"].get("ingress", []):
            assert rule.get("from"), f"{policy['metadata']['name']}: ingress from anywhere"
            open_ports.setdefault(role, set()).update(p["port"] for p in rule["ports"])
    receiver = _main(deployment(docs, "receiver"))
    worker = _main(deployment(docs, "worker"))
    assert open_ports == {
        "receiver": {int(option_value(receiver["args"], "--port") or 0)},
        "worker": {_port(worker, "metrics")},
    }


def test_prometheus_scrapes_receiver_and_worker(docs: tuple[dict[str, Any], ...]) -> None:
    routes = _get_routes()
    for role in ("receiver", "worker"):
        workload = deployment(docs, role)
        notes = workload["spec"]["template"]["metadata"].get("annotations", {})
        assert notes.get("prometheus.io/scrape") == "true", role
        ports = {p["containerPort"] for p in _main(workload)["ports"]}
        assert int(notes["prometheus.io/port"]) in ports, role
        assert notes["prometheus.io/path"] == "/metrics"
    assert "/metrics" in routes


@pytest.mark.skipif(kubectl() is None, reason="kubectl is not installed")
def test_example_overlay_exposes_only_the_webhook_path() -> None:
    docs = render_kustomize("overlays/example")
    (ingress,) = by_kind(docs, "Ingress")
    paths = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert [(p["path"], p["pathType"]) for p in paths] == [("/scaivault/events", "Exact")]
    assert ingress["spec"]["tls"], "the webhook must arrive over TLS"
    namespaces = by_kind(docs, "Namespace")
    assert namespaces[0]["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert all(
        d["metadata"].get("namespace") == "scaivault-rotator"
        for d in docs
        if d["kind"] != "Namespace"
    )
