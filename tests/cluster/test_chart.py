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
    ],
)
def test_values_that_break_the_schema_are_rejected_clearly(cluster: Cluster, values, message):
    result = cluster.helm("template", "voice-operator", str(CHART), *values, check=False)
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr
    assert message in result.stderr


def test_chart_crds_are_the_generated_ones():
    for name in ("voiceops.dev_modelassets.yaml", "voiceops.dev_voiceagents.yaml"):
        assert (CHART / "crds" / name).read_text() == (REPO / "crds" / name).read_text()


def test_chart_installs_and_the_operator_pod_becomes_ready(cluster: Cluster, namespace: str):
    placement = kwok_placement()
    values = {
        "nodeSelector": placement["nodeSelector"],
        "tolerations": placement["tolerations"],
        "watchNamespaces": [namespace],
    }
    values_file = Path(cluster.kubeconfig).parent / f"values-{namespace}.yaml"
    values_file.write_text(yaml.safe_dump(values))
    cluster.helm(
        "install",
        f"smoke-{namespace[-5:]}",
        str(CHART),
        "--namespace",
        namespace,
        "--values",
        str(values_file),
        "--wait",
        "--timeout",
        "120s",
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
