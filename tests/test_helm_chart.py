"""The Helm chart lints, renders valid Kubernetes objects and keeps its secure defaults.

Rendering goes through helm-python-sdk, which wraps Helm v4's Go SDK in a bundled
native library: no helm binary, cluster or network is involved.
"""

from __future__ import annotations

import ast
import base64
import json
import re
import uuid
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from broker.metrics import Metrics
from broker.models import Listener
from broker.storage.gauges import IngestLag, ListenerStats, Snapshot

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "event-broker"
VALUES_DIR = Path(__file__).parent / "helm_values"
KUBE_VERSION = "1.33.0"
RELEASE = "event-broker"
NAMESPACE = "mo"
# Custom resources kubernetes-validate has no schema for; their fields are asserted by hand.
CUSTOM_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule"}

Manifest = dict[str, Any]


def values_file(name: str) -> dict[str, Any]:
    if name == "default":
        return {}
    loaded: dict[str, Any] = yaml.safe_load((VALUES_DIR / f"{name}.yaml").read_text())
    return loaded


def render(values: dict[str, Any]) -> list[Manifest]:
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE)
    return [
        document
        for path, text in sorted(rendered.items())
        if path.endswith(".yaml")
        for document in yaml.safe_load_all(text)
        if document
    ]


def only(manifests: list[Manifest], kind: str) -> Manifest:
    found = [manifest for manifest in manifests if manifest["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def secret(manifests: list[Manifest], name: str) -> Manifest:
    (found,) = [m for m in manifests if m["kind"] == "Secret" and m["metadata"]["name"] == name]
    return found


def pod_spec(manifests: list[Manifest]) -> dict[str, Any]:
    spec: dict[str, Any] = only(manifests, "Deployment")["spec"]["template"]["spec"]
    return spec


def broker_container(manifests: list[Manifest]) -> dict[str, Any]:
    containers = pod_spec(manifests)["containers"]
    assert [container["name"] for container in containers] == ["broker"]
    container: dict[str, Any] = containers[0]
    return container


def env(manifests: list[Manifest]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in broker_container(manifests)["env"]}


def value_paths(values: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted paths of every value, down to where the schema stops naming properties."""
    paths = []
    for key, value in values.items():
        assert key in schema["properties"], f"{prefix}{key} is missing from values.schema.json"
        node = schema["properties"][key]
        if isinstance(value, dict) and "properties" in node:
            paths.extend(value_paths(value, node, f"{prefix}{key}."))
        else:
            paths.append(f"{prefix}{key}")
    return paths


@pytest.fixture(scope="module")
def default() -> list[Manifest]:
    return render(values_file("default"))


@pytest.fixture(scope="module")
def minimal() -> list[Manifest]:
    return render(values_file("minimal"))


@pytest.fixture(scope="module")
def everything() -> list[Manifest]:
    return render(values_file("everything"))


@pytest.mark.parametrize("values_name", ["default", "minimal", "everything"])
def test_chart_lints_without_warnings(values_name: str) -> None:
    report = helm.lint(
        CHART, values_file(values_name), strict=True, kube_version=f"v{KUBE_VERSION}"
    )

    assert report["errors"] == []
    assert [message for message in report["messages"] if message["severity"] >= 2] == []


@pytest.mark.parametrize("values_name", ["default", "minimal", "everything"])
def test_every_rendered_object_is_valid_kubernetes(values_name: str) -> None:
    for manifest in render(values_file(values_name)):
        if manifest["kind"] in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)


def test_defaults_render_only_the_core_objects(default: list[Manifest]) -> None:
    kinds = sorted(manifest["kind"] for manifest in default)

    # The Secrets: Redis' and the metrics token's.
    assert kinds == ["Deployment", "Pod", "Secret", "Secret", "Service", "ServiceAccount"]


def test_every_switch_renders_its_object(everything: list[Manifest]) -> None:
    kinds = sorted(manifest["kind"] for manifest in everything)

    assert kinds == [
        "ConfigMap",
        "Deployment",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "Pod",
        "PodDisruptionBudget",
        "PrometheusRule",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ]


def test_pod_runs_as_non_root_without_privileges(default: list[Manifest]) -> None:
    spec = pod_spec(default)
    container = broker_container(default)

    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 10001
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "runAsUser": 10001,
        "runAsGroup": 10001,
        "capabilities": {"drop": ["ALL"]},
    }
    assert only(default, "ServiceAccount")["automountServiceAccountToken"] is False


def test_read_only_root_gets_a_writable_tmp(default: list[Manifest]) -> None:
    volumes = {volume["name"]: volume for volume in pod_spec(default)["volumes"]}
    mounts = {mount["mountPath"]: mount for mount in broker_container(default)["volumeMounts"]}

    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]


def test_resources_have_requests_and_limits(default: list[Manifest]) -> None:
    resources = broker_container(default)["resources"]

    assert set(resources["requests"]) == {"cpu", "memory"}
    assert set(resources["limits"]) == {"cpu", "memory"}


def test_probes_hit_the_health_endpoints_on_http(default: list[Manifest]) -> None:
    container = broker_container(default)

    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/health/live", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}


def test_service_exposes_http_on_8000(default: list[Manifest]) -> None:
    ports = only(default, "Service")["spec"]["ports"]

    assert ports == [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}]


def test_created_secret_holds_the_redis_url_the_pod_reads(minimal: list[Manifest]) -> None:
    redis = secret(minimal, "event-broker-redis")
    variables = env(minimal)
    url_ref = variables["BROKER_REDIS_URL"]["valueFrom"]["secretKeyRef"]
    password_ref = variables["BROKER_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"]

    assert base64.b64decode(redis["data"]["redis-url"]).decode() == "redis://redis.mo.svc:6379/0"
    assert "redis-password" not in redis["data"]
    assert url_ref == {"name": "event-broker-redis", "key": "redis-url"}
    assert password_ref == {
        "name": "event-broker-redis",
        "key": "redis-password",
        "optional": True,
    }


def test_created_secret_carries_the_password_when_given() -> None:
    manifests = render({"redis": {"url": "redis://redis:6379", "password": "s3cret"}})

    redis = secret(manifests, "event-broker-redis")

    assert base64.b64decode(redis["data"]["redis-password"]) == b"s3cret"


def test_existing_secret_is_referenced_and_none_is_created(everything: list[Manifest]) -> None:
    variables = env(everything)

    assert [manifest for manifest in everything if manifest["kind"] == "Secret"] == []
    assert variables["BROKER_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "mo-events-redis",
        "key": "url",
    }
    assert variables["BROKER_REDIS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "mo-events-redis",
        "key": "password",
        "optional": True,
    }


def test_redis_tls_mounts_the_ca_read_only(everything: list[Manifest]) -> None:
    volumes = {volume["name"]: volume for volume in pod_spec(everything)["volumes"]}
    mount = next(m for m in broker_container(everything)["volumeMounts"] if m["name"] == "redis-ca")
    variables = env(everything)

    assert volumes["redis-ca"]["secret"]["secretName"] == "redis-ca"
    assert mount["readOnly"] is True
    assert variables["BROKER_REDIS_TLS_CA_FILE"]["value"] == f"{mount['mountPath']}/ca.pem"
    assert variables["BROKER_REDIS_CLUSTER"]["value"] == "true"


def test_redis_tls_refuses_a_plain_redis_url() -> None:
    values = {"redis": {"url": "redis://redis:6379", "tls": {"enabled": True, "caSecret": "ca"}}}

    with pytest.raises(helm.HelmRenderError, match="rediss://"):
        render(values)


def test_auth_is_oidc_with_the_offline_graphql_explorer_on_by_default(
    default: list[Manifest],
) -> None:
    variables = env(default)

    assert variables["BROKER_AUTH"]["value"] == "oidc"
    assert variables["BROKER_EXPLORER"]["value"] == "true"
    assert variables["BROKER_INTROSPECTION"]["value"] == "true"
    assert variables["BROKER_LOG_FORMAT"]["value"] == "json"


def test_values_reach_the_broker_settings(everything: list[Manifest]) -> None:
    values = {name: variable.get("value") for name, variable in env(everything).items()}

    assert values["BROKER_OIDC_ISSUER"] == "https://keycloak.example.org/auth/realms/mo"
    assert values["BROKER_OIDC_AUDIENCE"] == "event-broker"
    assert values["BROKER_MO_EMITTERS"] == (
        "0b7a2f6e-5a5c-4c1e-9d3f-1f0e2a3b4c5d,5c9e1d2f-8a7b-4e6c-b5d4-3a2b1c0d9e8f"
    )
    assert values["BROKER_RETRY_MIN_SECONDS"] == "60"
    assert values["BROKER_RETRY_MAX_SECONDS"] == "3600"
    assert values["BROKER_FETCH_MAX_WAIT_SECONDS"] == "20"
    assert values["BROKER_MAX_NAMESPACES_PER_OWNER"] == "20"
    assert values["BROKER_MAX_LISTENERS_PER_OWNER"] == "500"
    assert values["BROKER_KEY_PREFIX"] == "mo"


def test_console_sign_in_values_reach_the_broker_and_its_secrets_stay_in_a_secret(
    default: list[Manifest], everything: list[Manifest]
) -> None:
    variables = env(everything)

    assert env(default)["BROKER_CONSOLE"]["value"] == "true"
    assert "BROKER_CONSOLE_CLIENT_ID" not in env(default)
    assert variables["BROKER_CONSOLE_CLIENT_ID"]["value"] == "event-broker-console"
    assert variables["BROKER_CONSOLE_REDIRECT_URL"]["value"] == (
        "https://events.example.org/console/auth/callback"
    )
    for name, key in (
        ("BROKER_CONSOLE_SESSION_SECRET", "session-secret"),
        ("BROKER_CONSOLE_CLIENT_SECRET", "client-secret"),
    ):
        reference = variables[name]["valueFrom"]["secretKeyRef"]
        assert (reference["name"], reference["key"]) == ("mo-events-console", key)


def test_a_console_client_without_its_secret_is_refused() -> None:
    with pytest.raises(
        helm.HelmRenderError, match=r"console\.clientId needs console\.existingSecret"
    ):
        render({"console": {"clientId": "event-broker-console"}})


def test_every_variable_names_a_broker_setting(everything: list[Manifest]) -> None:
    source = ast.parse((ROOT / "broker" / "settings.py").read_text())
    settings = next(
        node for node in source.body if isinstance(node, ast.ClassDef) and node.name == "Settings"
    )
    known = {
        f"BROKER_{field.target.id.upper()}"
        for field in settings.body
        if isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name)
    }

    assert set(env(everything)) - known == set()


def test_termination_grace_covers_shutdown_and_pre_stop(
    default: list[Manifest], everything: list[Manifest]
) -> None:
    container = broker_container(default)

    assert pod_spec(default)["terminationGracePeriodSeconds"] == 30
    assert env(default)["BROKER_SHUTDOWN_TIMEOUT_SECONDS"]["value"] == "20"
    assert container["lifecycle"]["preStop"]["exec"]["command"] == [
        "python",
        "-c",
        "import time; time.sleep(5)",
    ]
    assert pod_spec(everything)["terminationGracePeriodSeconds"] == 50


def test_autoscaler_owns_the_replica_count(everything: list[Manifest]) -> None:
    autoscaler = only(everything, "HorizontalPodAutoscaler")

    assert "replicas" not in only(everything, "Deployment")["spec"]
    assert autoscaler["spec"]["scaleTargetRef"]["name"] == "mo-events"
    assert (autoscaler["spec"]["minReplicas"], autoscaler["spec"]["maxReplicas"]) == (3, 12)


def test_policies_select_the_broker_pods(everything: list[Manifest]) -> None:
    selector = only(everything, "Deployment")["spec"]["selector"]["matchLabels"]
    policy = only(everything, "NetworkPolicy")

    assert only(everything, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"] == selector
    assert policy["spec"]["podSelector"]["matchLabels"] == selector
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": "http", "protocol": "TCP"}]


def test_service_monitor_scrapes_metrics_on_http(everything: list[Manifest]) -> None:
    monitor = only(everything, "ServiceMonitor")
    service = only(everything, "Service")

    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["selector"]["matchLabels"] == service["spec"]["selector"]
    assert monitor["spec"]["endpoints"] == [
        {
            "port": "http",
            "path": "/metrics",
            "interval": "15s",
            "scrapeTimeout": "5s",
            "authorization": {
                "type": "Bearer",
                "credentials": {"name": "mo-events-metrics", "key": "token"},
            },
        }
    ]


def test_a_generated_metrics_token_is_in_a_secret_the_broker_and_the_monitor_read() -> None:
    manifests = render(
        {"redis": {"url": "redis://redis:6379"}, "serviceMonitor": {"enabled": True}}
    )
    token = base64.b64decode(secret(manifests, "event-broker-metrics")["data"]["metrics-token"])
    reference = {"name": "event-broker-metrics", "key": "metrics-token"}
    (endpoint,) = only(manifests, "ServiceMonitor")["spec"]["endpoints"]

    assert len(token) >= 32 and token.isalnum()
    assert env(manifests)["BROKER_METRICS_TOKEN"]["valueFrom"]["secretKeyRef"] == reference
    assert endpoint["authorization"] == {"type": "Bearer", "credentials": reference}
    # A generated token stays across upgrades, so it must not roll the pods.
    annotations = only(manifests, "Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert "checksum/metrics-token" not in annotations


def test_a_metrics_token_from_the_values_goes_into_the_secret_and_rolls_the_pods() -> None:
    values = {"redis": {"url": "redis://redis:6379"}, "metrics": {"token": "t" * 20}}
    first, second = render(values), render({**values, "metrics": {"token": "u" * 20}})
    template = [only(m, "Deployment")["spec"]["template"]["metadata"] for m in (first, second)]

    assert secret(first, "event-broker-metrics")["data"]["metrics-token"] == (
        base64.b64encode(b"t" * 20).decode()
    )
    assert (
        template[0]["annotations"]["checksum/metrics-token"]
        != template[1]["annotations"]["checksum/metrics-token"]
    )


def test_an_existing_metrics_secret_is_what_the_broker_reads(everything: list[Manifest]) -> None:
    reference = env(everything)["BROKER_METRICS_TOKEN"]["valueFrom"]["secretKeyRef"]

    assert reference == {"name": "mo-events-metrics", "key": "token"}


def test_a_metrics_token_and_an_existing_secret_are_refused_together() -> None:
    values = {"metrics": {"token": "t" * 20, "existingSecret": "mine"}}

    with pytest.raises(helm.HelmRenderError, match="exclude each other"):
        render(values)


def test_helm_test_pod_waits_for_readiness(default: list[Manifest]) -> None:
    pod = only(default, "Pod")
    args = pod["spec"]["containers"][0]["args"]

    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    assert args[-1] == "http://event-broker:8000/health/ready"


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"replicaCount": 2, "bogus": True}, "additional properties 'bogus'"),
        ({"graphql": {"playground": True}}, "additional properties 'playground'"),
        ({"replicaCount": "two"}, "want integer"),
        ({"auth": {"mode": "none"}}, "/auth/mode"),
        ({"auth": {"moEmitters": ["not-a-uuid"]}}, "/auth/moEmitters/0"),
        ({"metrics": {"token": "too-short"}}, "/metrics/token"),
        ({"metrics": {"token": " " + "t" * 20}}, "/metrics/token"),
    ],
)
def test_schema_rejects_bad_values(values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(helm.HelmValuesError, match=re.escape(complaint)):
        render(values)
    assert helm.lint(CHART, values)["errors"] != []


def test_schema_and_readme_cover_every_value() -> None:
    with helm.Chart.load(CHART) as chart:
        defaults = chart.values
    schema = json.loads((CHART / "values.schema.json").read_text())
    readme = (CHART / "README.md").read_text()

    for path in value_paths(defaults, schema):
        assert f"| `{path}` |" in readme, f"{path} is missing from the chart README"


def test_sentinel_values_reach_the_broker_instead_of_a_url() -> None:
    manifests = render(
        {
            "redis": {
                "password": "master-secret",
                "sentinel": {
                    "enabled": True,
                    "hosts": ["my-redis.mo.svc:26379", "other.mo.svc:26379"],
                    "password": "sentinel-secret",
                },
                "waitReplicas": 1,
            }
        }
    )
    variables = env(manifests)
    redis = secret(manifests, "event-broker-redis")

    assert "BROKER_REDIS_URL" not in variables
    assert (
        variables["BROKER_REDIS_SENTINELS"]["value"] == "my-redis.mo.svc:26379,other.mo.svc:26379"
    )
    assert variables["BROKER_REDIS_SENTINEL_MASTER"]["value"] == "mymaster"
    assert variables["BROKER_REDIS_WAIT_REPLICAS"]["value"] == "1"
    assert variables["BROKER_REDIS_SENTINEL_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "event-broker-redis",
        "key": "sentinel-password",
        "optional": True,
    }
    assert base64.b64decode(redis["data"]["sentinel-password"]) == b"sentinel-secret"


def test_wait_replicas_is_left_to_the_broker_unless_given() -> None:
    """The broker's default: 1 with Sentinel (a failover then loses nothing it confirmed)."""
    sentinel = {"sentinel": {"enabled": True, "hosts": ["my-redis.mo.svc:26379"]}}
    assert "BROKER_REDIS_WAIT_REPLICAS" not in env(render({"redis": sentinel}))
    assert "BROKER_REDIS_WAIT_REPLICAS" not in env(render({}))
    given = env(render({"redis": sentinel | {"waitReplicas": 0}}))
    assert given["BROKER_REDIS_WAIT_REPLICAS"]["value"] == "0"


def test_sentinel_and_cluster_exclude_each_other() -> None:
    with pytest.raises(Exception, match="exclude each other"):
        render({"redis": {"cluster": True, "sentinel": {"enabled": True, "hosts": ["s:26379"]}}})


# Shipped monitoring: the PrometheusRule and the Grafana dashboard -----------------------------

METRIC = re.compile(r"\b(?:os2mo|broker)_[a-z_]+\b|\bup\b")
DURATION = re.compile(r"([0-9]+(ms|s|m|h|d|w|y))+")


def exported_series() -> set[str]:
    """Every series name broker/metrics.py exports (counters' _total, histograms' _bucket...)."""
    listener = Listener(uuid.uuid4(), uuid.uuid4(), "mo", "person", "sync")
    stats = ListenerStats(pending=2, silenced=1, oldest_ms=1000, oldest_silenced_ms=2000)
    snapshot = Snapshot([(listener, stats)], [IngestLag(entries=1, oldest_ms=1000)], 2.0)
    text = Metrics().render(snapshot).decode()
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
    return {
        family.name + suffix
        for family in text_string_to_metric_families(text)
        for suffix in suffixes.get(family.type, [""])
    }


def queried_series(expression: str) -> set[str]:
    """The series a PromQL expression reads (the broker's, and Prometheus' own `up`)."""
    assert expression.count("(") == expression.count(")"), expression
    assert expression.count("{") == expression.count("}"), expression
    return set(METRIC.findall(expression)) - {"up"}


def alerts(manifests: list[Manifest]) -> dict[str, dict[str, Any]]:
    rule = only(manifests, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    (group,) = rule["spec"]["groups"]
    assert set(group) == {"name", "rules"}
    return {alert["alert"]: alert for alert in group["rules"]}


def dashboard(manifests: list[Manifest]) -> dict[str, Any]:
    (text,) = only(manifests, "ConfigMap")["data"].values()
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def test_prometheus_rule_alerts_on_backlog_age_fanout_and_redis(
    everything: list[Manifest],
) -> None:
    rule = only(everything, "PrometheusRule")
    found = alerts(everything)

    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert set(found) == {
        "EventBacklogGrowing",
        "EventTooOld",
        "EventFanoutBehind",
        "EventStoreUnavailable",
    }
    for name, alert in found.items():
        assert set(alert) == {"alert", "expr", "for", "labels", "annotations"}, name
        assert DURATION.fullmatch(alert["for"]), name
        assert alert["labels"]["severity"] in {"warning", "critical"}, name
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], name
        # Only this release's series: its namespace and the job the ServiceMonitor sets.
        assert 'namespace="mo", job="mo-events"' in alert["expr"], name


def test_prometheus_rule_queries_only_series_the_broker_exports(
    everything: list[Manifest],
) -> None:
    exported = exported_series()

    for name, alert in alerts(everything).items():
        assert queried_series(alert["expr"]), name
        assert queried_series(alert["expr"]) <= exported, name


def test_prometheus_rule_thresholds_come_from_the_values(everything: list[Manifest]) -> None:
    found = alerts(everything)

    assert "> 500" in found["EventBacklogGrowing"]["expr"]
    assert found["EventBacklogGrowing"]["for"] == "1h"
    assert "> 7200" in found["EventTooOld"]["expr"]
    assert "> 120" in found["EventFanoutBehind"]["expr"]
    assert found["EventStoreUnavailable"]["for"] == "1m"
    assert found["EventStoreUnavailable"]["labels"]["severity"] == "critical"


def test_prometheus_rule_takes_a_metric_selector_of_the_users() -> None:
    values = {
        "redis": {"url": "redis://redis:6379"},
        "monitoring": {"prometheusRule": {"enabled": True, "metricSelector": 'job="broker"'}},
    }

    for alert in alerts(render(values)).values():
        assert 'job="broker"' in alert["expr"]
        assert "namespace=" not in alert["expr"]


def test_dashboard_config_map_carries_the_sidecar_label(everything: list[Manifest]) -> None:
    config_map = only(everything, "ConfigMap")

    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert config_map["metadata"]["annotations"] == {"grafana_folder": "OS2mo"}
    assert config_map["metadata"]["namespace"] == "monitoring"
    assert list(config_map["data"]) == ["event-broker.json"]


def test_dashboard_is_a_grafana_dashboard_of_the_brokers_series(
    everything: list[Manifest],
) -> None:
    board = dashboard(everything)
    exported = exported_series()
    panels = [panel for panel in board["panels"] if panel["type"] != "row"]
    variables = {variable["name"] for variable in board["templating"]["list"]}

    assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
    assert {"datasource", "namespace", "job"} <= variables
    assert len({panel["id"] for panel in board["panels"]}) == len(board["panels"])
    queried: set[str] = set()
    for panel in panels:
        assert panel["type"] in {"timeseries", "stat", "table"}, panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, panel["title"]
        for target in panel["targets"]:
            assert '{namespace=~"$namespace", job=~"$job"' in target["expr"], panel["title"]
            series = queried_series(target["expr"])
            assert series and series <= exported, (panel["title"], series - exported)
            queried |= series
    # What operators look at first: backlog, oldest age, rates, fan-out, latency.
    assert {
        "os2mo_events",
        "os2mo_event_oldest",
        "os2mo_event_sent_total",
        "os2mo_event_acknowledged_total",
        "broker_fanout_backlog",
        "broker_request_duration_seconds_bucket",
    } <= queried


def test_monitoring_objects_are_off_by_default(default: list[Manifest]) -> None:
    assert {"PrometheusRule", "ConfigMap"}.isdisjoint(m["kind"] for m in default)
