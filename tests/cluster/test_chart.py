"""The Helm chart: lints, renders with default and other values, rejects bad values with a
clear message, installs into the real control plane, and grants the operator exactly what
it uses (checked against the apiserver's audit log of the whole cluster tier)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from testground import Cluster, kwok_placement
from testground.harness import OPERATOR_ACCOUNT, OPERATOR_NAMESPACE, REPO, wait_for

from voice_operator.api.modelasset import ModelAssetSpec
from voice_operator.api.voiceagent import ComponentRevision, VoiceAgentSpec
from voice_operator.render.meta import Owner
from voice_operator.render.modelasset import Asset, desired_fetch_job
from voice_operator.render.voiceagent import (
    Agent,
    desired_engine_deployment,
    desired_gateway_deployment,
)
from voice_operator.settings import OperatorSettings

pytestmark = pytest.mark.cluster
CHART = REPO / "charts" / "voice-operator"


def template(cluster: Cluster, *args: str) -> list[dict]:
    out = cluster.helm(
        "template", "voice-operator", str(CHART), "--namespace", "voice-system", *args
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def test_chart_lints(cluster: Cluster):
    out = cluster.helm("lint", str(CHART), "--strict").stdout
    assert "0 chart(s) failed" in out


def test_default_values_give_a_cluster_wide_single_replica_operator(cluster: Cluster):
    docs = {(d["kind"], d["metadata"]["name"]): d for d in template(cluster)}
    assert set(docs) == {
        ("ServiceAccount", "voice-operator"),
        ("ClusterRole", "voice-operator"),
        ("ClusterRoleBinding", "voice-operator"),
        ("Service", "voice-operator-metrics"),
        ("Deployment", "voice-operator"),
        ("ConfigMap", "voice-operator-dashboard"),
        ("Pod", "voice-operator-test"),  # the `helm test` hook
    }
    deployment = docs["Deployment", "voice-operator"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert deployment["spec"]["replicas"] == 1
    assert not [a for a in container["args"] if a.startswith(("--namespace", "--peering"))]
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert pod["securityContext"]["runAsNonRoot"] is True
    rules = docs["ClusterRole", "voice-operator"]["rules"]
    assert not [r for r in rules if "*" in r["verbs"] or "*" in r["resources"]]
    dashboard = docs["ConfigMap", "voice-operator-dashboard"]
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"


def test_chosen_namespaces_and_replicas_give_roles_and_peering(cluster: Cluster):
    docs = template(
        cluster,
        "--set",
        "watchNamespaces={team-a,team-b}",
        "--set",
        "replicaCount=2",
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--api-versions",
        "monitoring.coreos.com/v1",
    )
    kinds = sorted((d["kind"], d["metadata"].get("namespace", "")) for d in docs)
    assert ("Role", "team-a") in kinds
    assert ("RoleBinding", "team-b") in kinds
    assert ("KopfPeering", "team-a") in kinds
    assert not [k for k in kinds if k[0].startswith("Cluster")]
    assert ("ServiceMonitor", "voice-system") in kinds
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    assert {"--namespace=team-a", "--namespace=team-b", "--peering=voice-operator"} <= set(args)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["--set", "replicaCount=0"], "/replicaCount"),
        (["--set", "operator.logFormat=yaml"], "/operator/logFormat"),
        (["--set", "watchNamespaces={Bad_Name}"], "/watchNamespaces/0"),
        (["--set", "metrics.port=8081"], "/metrics/port"),
        (["--set", "imageTag=1"], "additional properties 'imageTag' not allowed"),
        (["--set", "imagePullSecrets[0].name=Reg_Cred"], "/imagePullSecrets/0/name"),
        (["--set", "fullnameOverride=Voice_Op"], "/fullnameOverride"),
        (["--set", "nameOverride=a.b"], "/nameOverride"),
        (["--set", "metrics.podMonitor.interval=soon"], "/metrics/podMonitor/interval"),
    ],
)
def test_values_that_break_the_schema_are_rejected_clearly(cluster: Cluster, values, message):
    result = cluster.helm("template", "voice-operator", str(CHART), *values, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr


MONITORING = ("--api-versions", "monitoring.coreos.com/v1")
MONITORS = (
    "--set",
    "metrics.serviceMonitor.enabled=true",
    "--set",
    "metrics.podMonitor.enabled=true",
)


def test_monitors_are_left_out_where_prometheus_operator_is_not_served(cluster: Cluster):
    """An install or upgrade without the monitoring CRDs must not fail on them."""
    kinds = {d["kind"] for d in template(cluster, *MONITORS)}
    assert not kinds & {"ServiceMonitor", "PodMonitor"}, kinds
    assert {d["kind"] for d in template(cluster, *MONITORS, *MONITORING)} >= {
        "ServiceMonitor",
        "PodMonitor",
    }
    assert not {d["kind"] for d in template(cluster, *MONITORING)} & {
        "ServiceMonitor",
        "PodMonitor",
    }


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        if e["operator"] == "In" and labels.get(e["key"]) not in e["values"]:
            return False
        if e["operator"] == "Exists" and e["key"] not in labels:
            return False
    return True


def test_the_pod_monitor_scrapes_the_engine_and_gateway_pods_the_operator_makes(cluster: Cluster):
    [monitor] = [d for d in template(cluster, *MONITORS, *MONITORING) if d["kind"] == "PodMonitor"]
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    [endpoint] = monitor["spec"]["podMetricsEndpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    settings = OperatorSettings()
    spec = VoiceAgentSpec.model_validate(
        {"stt": {"model": "m"}, "llm": {"model": "m"}, "tts": {"model": "m"}}
    )
    agent = Agent(Owner("VoiceAgent", "support", "voice", "uid"), spec)
    revision = ComponentRevision(
        provider="internal", model="m", model_version="v1", image="engine", claim_name="m-models"
    )
    engine = desired_engine_deployment(agent, "stt", revision, 1, settings)
    gateway = desired_gateway_deployment(agent, {}, 1, settings)
    for deployment in (engine, gateway):
        pod = deployment["spec"]["template"]
        assert _selects(monitor["spec"]["selector"], pod["metadata"]["labels"])
        [port] = pod["spec"]["containers"][0]["ports"]
        assert port["name"] == endpoint["port"]
    asset = Asset(
        Owner("ModelAsset", "m", "voice", "uid"),
        ModelAssetSpec.model_validate(
            {
                "engine": "stt",
                "format": "ct2",
                "version": "v1",
                "files": [{"url": "https://h/m.bin", "sha256": "a" * 64, "path": "m.bin"}],
                "storage": {"size": "1Gi"},
            }
        ),
    )
    job_pod = desired_fetch_job(asset, settings)["spec"]["template"]
    assert not _selects(monitor["spec"]["selector"], job_pod["metadata"]["labels"])
    # With watchNamespaces, only those.
    [monitor] = [
        d
        for d in template(cluster, *MONITORS, *MONITORING, "--set", "watchNamespaces={team-a}")
        if d["kind"] == "PodMonitor"
    ]
    assert monitor["spec"]["namespaceSelector"] == {"matchNames": ["team-a"]}


def test_name_overrides_rename_every_object(cluster: Cluster):
    names = {d["metadata"]["name"] for d in template(cluster, "--set", "fullnameOverride=voice")}
    assert {"voice", "voice-metrics", "voice-dashboard", "voice-test"} <= names
    docs = template(cluster, "--set", "nameOverride=speech")
    assert {d["metadata"]["name"] for d in docs} >= {
        "voice-operator-speech",
        "voice-operator-speech-metrics",
    }
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    assert deployment["spec"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "speech"


def test_pull_secrets_reach_the_operator_pod_its_settings_and_the_test_pod(
    cluster: Cluster, monkeypatch
):
    docs = template(cluster, "--set", "imagePullSecrets[0].name=regcred")
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "regcred"}]
    for env in pod["containers"][0]["env"]:
        monkeypatch.setenv(env["name"], env["value"])
    assert OperatorSettings().image_pull_secrets == ["regcred"]
    [test_pod] = [d for d in docs if d["kind"] == "Pod"]
    assert test_pod["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"


def test_the_chart_states_the_kubernetes_versions_it_needs(cluster: Cluster):
    old = cluster.helm("template", "v", str(CHART), "--kube-version", "1.29.9", check=False)
    assert old.returncode != 0
    assert "kubeVersion" in old.stderr or "requires kubeVersion" in old.stderr, old.stderr
    assert template(cluster, "--kube-version", "1.30.0")


def test_chart_crds_are_the_generated_ones():
    for name in ("voiceops.dev_modelassets.yaml", "voiceops.dev_voiceagents.yaml"):
        assert (CHART / "crds" / name).read_text() == (REPO / "crds" / name).read_text()


def _install_args(
    cluster: Cluster, namespace: str, values: dict, name: str | None = None
) -> tuple[str, ...]:
    """helm install/upgrade arguments with `values` (written beside the kubeconfig), waiting
    for the release to be ready."""
    values_file = Path(cluster.kubeconfig).parent / f"values-{name or namespace}.yaml"
    values_file.write_text(yaml.safe_dump(values))
    return ("--namespace", namespace, "--values", str(values_file), "--wait", "--timeout", "120s")


def test_chart_installs_and_the_operator_pod_becomes_ready(cluster: Cluster, namespace: str):
    placement = kwok_placement()
    values = {
        "nodeSelector": placement["nodeSelector"],
        "tolerations": placement["tolerations"],
        "watchNamespaces": [namespace],
    }
    cluster.helm(
        "install", f"smoke-{namespace[-5:]}", str(CHART), *_install_args(cluster, namespace, values)
    )
    deployment = json.loads(
        cluster.kubectl(
            "get",
            "deployment",
            "-n",
            namespace,
            "-l",
            "app.kubernetes.io/name=voice-operator",
            "-o",
            "json",
        ).stdout
    )["items"][0]
    assert deployment["status"]["availableReplicas"] == 1
    roles = cluster.kubectl("get", "roles,rolebindings", "-n", namespace, "-o", "name").stdout
    assert "role.rbac.authorization.k8s.io/smoke-" in roles
    cluster.helm("uninstall", f"smoke-{namespace[-5:]}", "--namespace", namespace, "--wait")


def _monitoring_crd(kind: str, plural: str) -> dict:
    """Stands in for prometheus-operator's CRD: the API is served, the schema left open."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.monitoring.coreos.com"},
        "spec": {
            "group": "monitoring.coreos.com",
            "names": {"kind": kind, "plural": plural, "singular": kind.lower()},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }


def test_every_new_value_installs_and_upgrades_with_and_without_the_monitoring_api(
    cluster: Cluster, namespace: str
):
    placement = kwok_placement()
    release = f"vals-{namespace[-5:]}"
    fullname = f"voice-{namespace[-5:]}"
    values = {
        "nodeSelector": placement["nodeSelector"],
        "tolerations": placement["tolerations"],
        "watchNamespaces": [namespace],
        "nameOverride": "speech",
        "fullnameOverride": fullname,
        "imagePullSecrets": [{"name": "regcred"}],
        "metrics": {
            "port": 8080,
            "serviceMonitor": {"enabled": True, "labels": {"release": "kps"}},
            "podMonitor": {"enabled": True, "interval": "30s", "labels": {"release": "kps"}},
        },
    }
    install = _install_args(cluster, namespace, values, name=release)
    crds = [
        _monitoring_crd("ServiceMonitor", "servicemonitors"),
        _monitoring_crd("PodMonitor", "podmonitors"),
    ]
    try:
        # No monitoring API: installs, and says why there are no monitors.
        installed = cluster.helm("install", release, str(CHART), *install)
        assert "monitoring.coreos.com/v1 is not served" in installed.stdout
        deployment = json.loads(
            cluster.kubectl("get", "deployment", fullname, "-n", namespace, "-o", "json").stdout
        )
        pod = deployment["spec"]["template"]["spec"]
        assert pod["imagePullSecrets"] == [{"name": "regcred"}]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["VOICE_OPERATOR_IMAGE_PULL_SECRETS"] == '["regcred"]'
        assert deployment["metadata"]["labels"]["app.kubernetes.io/name"] == "speech"
        assert deployment["status"]["availableReplicas"] == 1
        # The API appears: the upgrade adds both monitors.
        cluster.apply(*crds)
        for crd in crds:
            cluster.kubectl("wait", "--for=condition=Established", f"crd/{crd['metadata']['name']}")
        cluster.helm("upgrade", release, str(CHART), *install)
        made = cluster.kubectl(
            "get", "servicemonitors,podmonitors", "-n", namespace, "-o", "name"
        ).stdout.split()
        assert sorted(made) == [
            f"podmonitor.monitoring.coreos.com/{fullname}-agents",
            f"servicemonitor.monitoring.coreos.com/{fullname}",
        ]
        monitor = json.loads(
            cluster.kubectl(
                "get", "podmonitor", f"{fullname}-agents", "-n", namespace, "-o", "json"
            ).stdout
        )
        assert monitor["metadata"]["labels"]["release"] == "kps"
        assert monitor["spec"]["namespaceSelector"] == {"matchNames": [namespace]}
        cluster.helm("uninstall", release, "--namespace", namespace, "--wait")
    finally:
        for crd in crds:
            cluster.kubectl("delete", "crd", crd["metadata"]["name"], "--ignore-not-found")


def _granted(cluster: Cluster) -> set[tuple[str, str, str]]:
    [role] = [
        d
        for d in template(cluster, "--show-only", "templates/rbac.yaml")
        if d["kind"] == "ClusterRole"
    ]
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def _used(audit_log: Path) -> tuple[set[tuple[str, str, str]], list[str]]:
    """(group, resource[/subresource], verb) the operator's identity was allowed, and the
    requests it was refused."""
    user = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}"
    used, refused = set(), []
    for line in audit_log.read_text().splitlines():
        event = json.loads(line)
        ref = event.get("objectRef")
        if event["user"]["username"] != user or not ref:
            continue
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        code = event.get("responseStatus", {}).get("code", 0)
        # RBAC's own verdict; a 403 from admission (e.g. a namespace being deleted) was
        # authorized and is not a missing permission.
        # Just after the fault catalogue restarts the apiserver, RBAC answers from a cache
        # still filling: those refusals say nothing about the chart.
        restarted = ref.get("namespace", "").startswith("test-apiserver-restarted")
        if (
            event.get("annotations", {}).get("authorization.k8s.io/decision") == "forbid"
            and not restarted
        ):
            refused.append(
                f"{event['verb']} {resource} in {ref.get('namespace', '-')}: "
                f"{event['responseStatus'].get('message', '')}"
            )
        else:
            used.add((ref.get("apiGroup", ""), resource, event["verb"]))
            if event["verb"] == "patch" and code == 201:
                # Server-side apply created the object: the apiserver checked `create`.
                used.add((ref.get("apiGroup", ""), resource, "create"))
    return used, refused


@pytest.mark.after_the_tier
def test_the_chart_grants_exactly_what_the_operator_uses(cluster: Cluster, request):
    """Runs after every other test: by then every operator of the tier has run as the
    chart's ServiceAccount. Skipped only when the tier ran partially (then the
    usage is incomplete) or against a cluster whose audit log we don't have."""
    ran = {item.module.__name__.rsplit(".", 1)[-1] for item in request.session.items}
    needed = {"test_modelasset", "test_voiceagent", "test_rollout"}
    if not needed <= ran:
        pytest.skip(
            f"needs the whole cluster tier in the same run ({sorted(needed - ran)} not selected)"
        )
    if cluster.audit_log is None:
        pytest.skip("the apiserver's audit log belongs to the test ground")
    wait_for("the audit log", lambda: cluster.audit_log.exists())
    used, refused = _used(cluster.audit_log)
    assert refused == []
    granted = _granted(cluster)
    unused = granted - used
    by_resource = defaultdict(list)
    for group, resource, verb in sorted(unused):
        by_resource[f"{group}/{resource}"].append(verb)
    assert not by_resource, f"granted but never used: {dict(by_resource)}"
    assert used <= granted


@pytest.mark.after_the_tier
def test_the_operator_watches_only_its_own_objects_and_never_lists_secret_values(
    cluster: Cluster, request
):
    """From the audit log of the whole tier: every list and watch of the kinds the
    operator creates asks the apiserver for our label only, and every list of Secrets is
    answered with metadata (names), never data."""
    ran = {item.module.__name__.rsplit(".", 1)[-1] for item in request.session.items}
    if not {"test_modelasset", "test_voiceagent", "test_rollout"} <= ran:
        pytest.skip("needs the whole cluster tier in the same run")
    if cluster.audit_log is None:
        pytest.skip("the apiserver's audit log belongs to the test ground")
    user = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{OPERATOR_ACCOUNT}"
    selected = {"pods", "deployments", "services", "configmaps", "jobs"}
    reads: dict[str, int] = defaultdict(int)
    for line in cluster.audit_log.read_text().splitlines():
        event = json.loads(line)
        ref = event.get("objectRef") or {}
        if event["user"]["username"] != user or event["verb"] not in ("list", "watch"):
            continue
        resource = ref.get("resource", "")
        reads[f"{event['verb']} {resource}"] += 1
        if resource in selected:
            query = parse_qs(urlsplit(event["requestURI"]).query)
            assert query.get("labelSelector") == ["app.kubernetes.io/managed-by=voice-operator"], (
                event["requestURI"]
            )
        # A list the apiserver failed (the restart in the fault catalogue cuts some) answered
        # nothing at all, so only the answered ones can show what they carried.
        answered = (event.get("responseStatus") or {}).get("code") == 200
        if resource == "secrets" and event["verb"] == "list" and answered:
            answer = event.get("responseObject") or {}
            assert answer.get("kind") == "PartialObjectMetadataList", event["requestURI"]
            assert all("data" not in item for item in answer.get("items") or [])
    assert reads["watch pods"] and reads["list secrets"], dict(reads)
