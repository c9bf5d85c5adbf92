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

from tests.test_helm_chart import CHART, KUBE_VERSION, Manifest, render, values_file

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
    }  # fmt: skip
    assert set(variables) - known == set()


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
