"""The files a user copies from examples/argocd: the argocd-cm keys carry exactly the Lua
that the health tests run, under the keys Argo CD looks up for our CRDs."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from luakit import EXAMPLES, REPO, SCRIPTS

pytestmark = pytest.mark.unit


def crd(kind: str) -> dict:
    for path in sorted((REPO / "crds").glob("*.yaml")):
        doc = yaml.safe_load(path.read_text())
        if doc["spec"]["names"]["kind"] == kind:
            return doc
    raise AssertionError(f"no CRD for {kind} in crds/")


def config_map() -> dict:
    return yaml.safe_load((EXAMPLES / "argocd-cm.yaml").read_text())


@pytest.mark.parametrize("kind", sorted(SCRIPTS))
def test_argocd_cm_holds_the_lua_files_byte_for_byte(kind: str):
    group = crd(kind)["spec"]["group"]
    key = f"resource.customizations.health.{group}_{kind}"
    data = config_map()["data"]
    assert key in data, f"argocd-cm.yaml has no {key}"
    assert data[key] == SCRIPTS[kind].read_text(), (
        f"{key} in argocd-cm.yaml differs from {SCRIPTS[kind].name}: copy the file in again"
    )


def test_argocd_cm_has_only_our_health_keys_and_is_argos_configmap():
    cm = config_map()
    assert (cm["kind"], cm["metadata"]["name"], cm["metadata"]["namespace"]) == (
        "ConfigMap",
        "argocd-cm",
        "argocd",
    )
    wanted = {f"resource.customizations.health.voiceops.dev_{kind}" for kind in SCRIPTS}
    assert set(cm["data"]) == wanted


@pytest.mark.parametrize("kind", sorted(SCRIPTS))
def test_status_is_a_subresource_so_argo_never_diffs_what_the_operator_writes(kind: str):
    for version in crd(kind)["spec"]["versions"]:
        assert version["subresources"].get("status") == {}


def test_application_syncs_our_examples_without_ignore_differences():
    app = yaml.safe_load((EXAMPLES / "application.yaml").read_text())
    assert (app["apiVersion"], app["kind"]) == ("argoproj.io/v1alpha1", "Application")
    spec = app["spec"]
    assert "ignoreDifferences" not in spec
    include = spec["source"]["directory"]["include"]
    for name in ("model-assets.yaml", "voice-agent.yaml"):
        assert name in include
    automated = spec["syncPolicy"]["automated"]
    assert automated == {"prune": True, "selfHeal": True}


def test_the_application_syncs_example_files_we_have_health_checks_for():
    for name in ("model-assets.yaml", "voice-agent.yaml"):
        docs = [d for d in yaml.safe_load_all((REPO / "examples" / name).read_text()) if d]
        ours = [d for d in docs if d["apiVersion"].startswith("voiceops.dev/")]
        assert ours, f"examples/{name} has none of our resources"
        for doc in ours:
            assert doc["kind"] in SCRIPTS
            # The Application's destination namespace applies only when none is set.
            assert "namespace" not in doc["metadata"]


def test_readme_shows_the_keys_it_tells_users_to_install():
    readme = (EXAMPLES / "README.md").read_text()
    for path in (*SCRIPTS.values(), EXAMPLES / "argocd-cm.yaml", EXAMPLES / "application.yaml"):
        assert Path(path).name in readme
    for kind in SCRIPTS:
        assert f"resource.customizations.health.voiceops.dev_{kind}" in readme
