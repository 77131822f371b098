"""crds/ is generated from the pydantic models and must not drift from them."""

from __future__ import annotations

import pytest

from voice_operator.api import crdgen

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "folder", [crdgen.default_output_dir(), crdgen.chart_crds_dir()], ids=["crds", "chart-crds"]
)
def test_crd_folders_match_the_models(folder):
    stale = crdgen.differences(folder)
    assert not stale, f"run `voice-crdgen`: {stale} in {folder} differ from the models"


def test_schemas_are_structural():
    """No $ref, no anyOf outside int-or-string, every node typed."""

    def walk(node: dict, path: str) -> None:
        assert "$ref" not in node, path
        assert "anyOf" not in node or node.get("x-kubernetes-int-or-string"), path
        assert "type" in node or node.get("x-kubernetes-int-or-string"), path
        for name, sub in node.get("properties", {}).items():
            walk(sub, f"{path}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key], f"{path}[]")

    for definition in crdgen.DEFINITIONS:
        schema = crdgen.crd(definition)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        walk(schema, definition.kind)


def test_every_spec_field_has_a_description():
    def walk(node: dict, path: str) -> None:
        for name, sub in node.get("properties", {}).items():
            assert sub.get("description"), f"{path}.{name} has no description"
            walk(sub, f"{path}.{name}")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")

    for definition in crdgen.DEFINITIONS:
        root = crdgen.crd(definition)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        walk(root["properties"]["spec"], f"{definition.kind}.spec")


def test_check_mode_reports_a_stale_folder(tmp_path):
    assert crdgen.main(["--out", str(tmp_path), "--check"]) == 1
    assert crdgen.main(["--out", str(tmp_path)]) == 0
    assert crdgen.main(["--out", str(tmp_path), "--check"]) == 0
