"""The chart's relay Deployment: off by default, valid when on, wired to the broker's Redis."""

from __future__ import annotations

import ast
import base64
import re
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
from prometheus_client.parser import text_string_to_metric_families

from broker.relay.metrics import RelayMetrics
from tests.test_helm_chart import (
    CHART,
    CUSTOM_KINDS,
    DURATION,
    KUBE_VERSION,
    Manifest,
    alerts,
    queried_series,
    render,
    values_file,
)

RELAY_VALUES = ["relay", "relay-amqp"]


def relay_deployment(manifests: list[Manifest]) -> Manifest:
    found = [
        m
        for m in manifests
        if m["kind"] == "Deployment" and m["metadata"]["name"].endswith("-relay")
    ]
    assert len(found) == 1
    return found[0]


def relay_env(manifests: list[Manifest]) -> dict[str, dict[str, Any]]:
    container = relay_deployment(manifests)["spec"]["template"]["spec"]["containers"][0]
    return {variable["name"]: variable for variable in container["env"]}


def relay_setting_names() -> set[str]:
    source = ast.parse((Path(CHART).parents[1] / "broker" / "relay" / "settings.py").read_text())
    settings = next(
        node
        for node in source.body
        if isinstance(node, ast.ClassDef) and node.name == "RelaySettings"
    )
    return {
        f"BROKER_RELAY_{field.target.id.upper()}"
        for field in settings.body
        if isinstance(field, ast.AnnAssign) and isinstance(field.target, ast.Name)
    }


def test_the_relay_is_off_by_default() -> None:
    assert not any(m["metadata"]["name"].endswith("-relay") for m in render({}))


@pytest.mark.parametrize("values_name", RELAY_VALUES)
def test_the_relay_lints_and_renders_valid_kubernetes(values_name: str) -> None:
    values = values_file(values_name)
    report = helm.lint(CHART, values, strict=True, kube_version=f"v{KUBE_VERSION}")
    assert report["errors"] == []
    for manifest in render(values):
        if manifest["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(manifest, KUBE_VERSION, strict=True)


def test_relay_pods_are_not_behind_the_brokers_service() -> None:
    manifests = render(values_file("relay"))
    service = next(m for m in manifests if m["kind"] == "Service")
    labels = relay_deployment(manifests)["spec"]["template"]["metadata"]["labels"]
    selector = service["spec"]["selector"]
    assert not all(labels.get(key) == value for key, value in selector.items())


def test_graphql_values_reach_the_relay_settings_and_the_secret_holds_the_client_secret() -> None:
    manifests = render(values_file("relay"))
    variables = relay_env(manifests)
    values = {name: variable.get("value") for name, variable in variables.items()}
    assert values["BROKER_RELAY_SOURCE"] == "graphql"
    assert values["BROKER_RELAY_OS2MO_URL"] == "http://mo-service:5000/graphql/v25"
    assert values["BROKER_RELAY_ROUTING_KEYS"] == "person,engagement"
    assert values["BROKER_RELAY_PARALLELISM"] == "4"
    assert values["BROKER_KEY_PREFIX"] == "mo"  # the broker's extra settings apply too
    reference = variables["BROKER_RELAY_CLIENT_SECRET"]["valueFrom"]["secretKeyRef"]
    secret = next(
        m for m in manifests if m["kind"] == "Secret" and m["metadata"]["name"] == reference["name"]
    )
    assert base64.b64decode(secret["data"][reference["key"]]) == b"s3cret"
    assert variables["BROKER_REDIS_URL"]["valueFrom"]["secretKeyRef"]["key"] == "redis-url"
    known = relay_setting_names() | {
        "BROKER_REDIS_URL", "BROKER_REDIS_PASSWORD", "BROKER_REDIS_CLUSTER", "BROKER_LOG_FORMAT",
        "BROKER_LOG_LEVEL", "BROKER_SHUTDOWN_TIMEOUT_SECONDS", "BROKER_KEY_PREFIX",
        "BROKER_REDIS_WAIT_TIMEOUT_MS", "BROKER_REDIS_ALLOW_EVICTION",
    }  # fmt: skip
    assert set(variables) - known == set()


@pytest.mark.parametrize(
    "redis_values",
    [
        {
            "url": "rediss://redis:6379/0",
            "allowEviction": True,
            "tls": {"enabled": True, "caSecret": "redis-ca"},
        },
        {"sentinel": {"enabled": True, "hosts": ["my-redis.mo.svc:26379"]}, "waitReplicas": 2},
        {"sentinel": {"enabled": True, "hosts": ["my-redis.mo.svc:26379"]}},
    ],
    ids=["url", "sentinel", "sentinel-default-wait"],
)
def test_the_relay_reaches_the_brokers_redis_with_the_brokers_redis_settings(
    redis_values: dict[str, Any],
) -> None:
    values = values_file("relay") | {"redis": redis_values}
    manifests = render(values)
    deployment = next(
        m
        for m in manifests
        if m["kind"] == "Deployment" and m["metadata"]["name"] == "event-broker"
    )
    variables = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    broker = {v["name"]: v for v in variables if v["name"].startswith("BROKER_REDIS_")}
    relay = {
        name: v for name, v in relay_env(manifests).items() if name.startswith("BROKER_REDIS_")
    }
    assert relay == broker


def test_amqp_reads_its_url_from_an_existing_secret_and_none_is_created() -> None:
    manifests = render(values_file("relay-amqp"))
    variables = relay_env(manifests)
    assert variables["BROKER_RELAY_SOURCE"]["value"] == "amqp"
    assert variables["BROKER_RELAY_AMQP_URL"]["valueFrom"]["secretKeyRef"] == {
        "name": "mo-relay",
        "key": "amqp-url",
    }
    assert "BROKER_RELAY_CLIENT_SECRET" not in variables
    assert not any(m["kind"] == "Secret" for m in manifests)


def test_a_graphql_relay_without_its_upstream_is_refused() -> None:
    with pytest.raises(helm.HelmError, match=re.escape("relay.graphql.os2moUrl")):
        render({"redis": {"url": "redis://r:6379/0"}, "relay": {"enabled": True}})


def test_the_default_wait_reaches_the_broker() -> None:
    manifests = render(
        {"redis": {"url": "redis://r:6379/0"}, "delivery": {"fetchDefaultWaitSeconds": 20}}
    )
    broker = next(m for m in manifests if m["kind"] == "Deployment")
    container = broker["spec"]["template"]["spec"]["containers"][0]
    variables = {variable["name"]: variable.get("value") for variable in container["env"]}
    assert variables["BROKER_FETCH_DEFAULT_WAIT_SECONDS"] == "20"


def monitored_relay() -> list[Manifest]:
    values = values_file("relay")
    values |= {
        "serviceMonitor": {"enabled": True},
        "networkPolicy": {
            "enabled": True,
            "relayIngressFrom": [{"podSelector": {"matchLabels": {"app": "prometheus"}}}],
        },
        "podDisruptionBudget": {"enabled": True},
        "monitoring": {"prometheusRule": {"enabled": True, "relay": {"for": "20m"}}},
    }
    return render(values)


def relay_objects(manifests: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in manifests if m["kind"] == kind and m["metadata"]["name"].endswith("-relay")]


def test_relay_pods_are_scraped_guarded_and_fenced_like_the_brokers() -> None:
    manifests = monitored_relay()
    pods = relay_deployment(manifests)["spec"]["template"]
    labels = pods["metadata"]["labels"]
    ports = {port["name"] for port in pods["spec"]["containers"][0]["ports"]}

    (monitor,) = relay_objects(manifests, "PodMonitor")
    (endpoint,) = monitor["spec"]["podMetricsEndpoints"]
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert endpoint["port"] in ports and endpoint["path"] == "/metrics"
    assert {"targetLabel": "job", "replacement": "event-broker-relay"} in endpoint["relabelings"]
    (budget,) = relay_objects(manifests, "PodDisruptionBudget")
    (policy,) = relay_objects(manifests, "NetworkPolicy")
    for selector in (
        monitor["spec"]["selector"],
        budget["spec"]["selector"],
        policy["spec"]["podSelector"],
    ):
        assert selector["matchLabels"].items() <= labels.items()
    (ingress,) = policy["spec"]["ingress"]
    assert [port["port"] for port in ingress["ports"]] == ["http"]
    assert ingress["from"] == [{"podSelector": {"matchLabels": {"app": "prometheus"}}}]
    # The broker's own objects stay as they were: one of each, for the broker's pods.
    assert len([m for m in manifests if m["kind"] == "PodDisruptionBudget"]) == 2


def relay_series() -> set[str]:
    metrics = RelayMetrics()
    metrics.relayed.labels("graphql", "person").inc()
    metrics.rejected.labels("graphql", "refused").inc()
    metrics.upstream_errors.labels("graphql").inc()
    metrics.store_errors.inc()
    metrics.lag.labels("graphql").observe(0.1)
    metrics.last_relayed.labels("graphql").set(1)
    suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
    return {
        family.name + suffix
        for family in text_string_to_metric_families(metrics.render().decode())
        for suffix in suffixes.get(family.type, [""])
    }


def test_relay_alerts_read_only_the_relays_series_of_this_release() -> None:
    found = {name: alert for name, alert in alerts(monitored_relay()).items() if "Relay" in name}

    assert set(found) == {
        "EventRelayDown",
        "EventRelayUpstreamFailing",
        "EventRelayStoreFailing",
        "EventRelayRejecting",
    }
    exported = relay_series()
    for name, alert in found.items():
        assert 'namespace="mo", job="event-broker-relay"' in alert["expr"], name
        assert queried_series(alert["expr"]) <= exported, name
        assert DURATION.fullmatch(alert["for"]), name
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], name
    assert "up{" in found["EventRelayDown"]["expr"]
    assert found["EventRelayDown"]["labels"]["severity"] == "critical"
    assert found["EventRelayStoreFailing"]["for"] == "20m"


def test_without_the_relay_there_are_no_relay_alerts_or_monitors() -> None:
    values = values_file("everything")
    manifests = render(values)
    assert not any("Relay" in name for name in alerts(manifests))
    assert relay_objects(manifests, "PodMonitor") == []
