"""crds/ is generated from the pydantic models and must not drift from them."""

from __future__ import annotations

import pytest

from voice_operator.api import crdgen
from voice_operator.api.common import POD_ANNOTATIONS_MAX_BYTES, QUALIFIED_NAME_MAX

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


def _bound(node: dict, path: str) -> int:
    """Most characters of JSON a spec node can hold; fails on a node with no bound."""
    if "enum" in node:
        return max(len(str(v)) + 2 for v in node["enum"])
    kind = "string" if node.get("x-kubernetes-int-or-string") else node.get("type")
    if kind == "string":
        assert "maxLength" in node, f"{path} has no maxLength"
        return node["maxLength"] + 2
    if kind in ("integer", "number", "boolean"):
        return 24
    if kind == "array":
        assert "maxItems" in node, f"{path} has no maxItems"
        return 2 + node["maxItems"] * (_bound(node["items"], f"{path}[]") + 1)
    assert kind == "object", path
    if "additionalProperties" in node:
        assert "maxProperties" in node, f"{path} has no maxProperties"
        if path.endswith(".podAnnotations"):  # keys and values together, by a rule
            [limit] = [
                int(v["rule"].rsplit("<=", 1)[1])
                for v in node["x-kubernetes-validations"]
                if ".sum() <=" in v["rule"]
            ]
            assert limit <= POD_ANNOTATIONS_MAX_BYTES, path
            return limit + node["maxProperties"] * 6
        value = _bound(node["additionalProperties"], f"{path}{{}}")
        return 2 + node["maxProperties"] * (QUALIFIED_NAME_MAX + 4 + value)
    return 2 + sum(len(k) + 4 + _bound(v, f"{path}.{k}") for k, v in node["properties"].items())


@pytest.mark.parametrize("definition", crdgen.DEFINITIONS, ids=lambda d: d.kind)
def test_every_spec_field_is_bounded(definition):
    """Every string, list and map of a spec has a limit, so an oversize spec is refused
    naming the field rather than by etcd's request limit; the largest spec the schema
    accepts stays far below that limit (1.5 MiB), status copies of it included."""
    root = crdgen.crd(definition)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _bound(root["properties"]["spec"], "spec") < 300 * 1024
    assert _bound(root["properties"]["metadata"], "metadata") < 300
