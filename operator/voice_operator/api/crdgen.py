"""Writes crds/*.yaml from the pydantic models: the models are the one source of truth.

pydantic produces JSON Schema; Kubernetes wants a *structural* OpenAPI v3 schema (no $ref,
no nullable unions, every node typed). This module does that translation and adds the
CRD's names, printer columns and subresources.

    voice-crdgen            # rewrite crds/
    voice-crdgen --check    # exit 1 if crds/ differs from the models
"""

from __future__ import annotations

import argparse
import copy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema, NoDefault
from pydantic_core import core_schema

from voice_operator import GROUP, VERSION
from voice_operator.api import modelasset, voiceagent
from voice_operator.api.modelasset import ModelAssetSpec, ModelAssetStatus
from voice_operator.api.voiceagent import VoiceAgentSpec, VoiceAgentStatus

# JSON Schema keywords Kubernetes does not accept, or that carry nothing for users.
_DROPPED = {"title", "$defs", "propertyNames", "examples"}


@dataclass(frozen=True)
class CrdDefinition:
    kind: str
    plural: str
    short_names: list[str]
    description: str
    spec: type[BaseModel]
    status: type[BaseModel]
    printer_columns: list[dict[str, Any]]
    # metadata.name's schema: the apiserver allows one there (and nowhere else in metadata),
    # and its errors then name metadata.name.
    name_schema: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"{self.plural}.{GROUP}"


def _ready_column(name: str = "Ready") -> dict[str, Any]:
    return {
        "name": name.upper(),
        "type": "string",
        "jsonPath": f'.status.conditions[?(@.type=="{name}")].status',
    }


def _age_column() -> dict[str, Any]:
    return {"name": "AGE", "type": "date", "jsonPath": ".metadata.creationTimestamp"}


MODEL_ASSET = CrdDefinition(
    kind="ModelAsset",
    plural="modelassets",
    short_names=["ma", "masset"],
    description="Model files with a version and sha256, downloaded into a PVC by a Job; "
    "versions are kept side by side so rollback never re-downloads.",
    spec=ModelAssetSpec,
    status=ModelAssetStatus,
    printer_columns=[
        {"name": "ENGINE", "type": "string", "jsonPath": ".spec.engine"},
        {"name": "VERSION", "type": "string", "jsonPath": ".spec.version"},
        {"name": "CURRENT", "type": "string", "jsonPath": ".status.currentVersion"},
        {"name": "PHASE", "type": "string", "jsonPath": ".status.phase"},
        {
            "name": "PROGRESS",
            "type": "integer",
            "jsonPath": ".status.progress.percent",
            "description": "Percent of spec.version downloaded.",
        },
        {"name": "FORMAT", "type": "string", "jsonPath": ".spec.format", "priority": 1},
        _age_column(),
    ],
    name_schema=modelasset.NAME_SCHEMA,
)

VOICE_AGENT = CrdDefinition(
    kind="VoiceAgent",
    plural="voiceagents",
    short_names=["va", "vagent"],
    description="A whole voice agent: speech-to-text, language model, text-to-speech and a "
    "gateway that runs a conversation turn. Each stage is served by our engine on a "
    "ModelAsset (internal) or by a vendor API (external).",
    spec=VoiceAgentSpec,
    status=VoiceAgentStatus,
    printer_columns=[
        _ready_column(),
        {"name": "STT", "type": "string", "jsonPath": ".status.components.stt.serving"},
        {"name": "LLM", "type": "string", "jsonPath": ".status.components.llm.serving"},
        {"name": "TTS", "type": "string", "jsonPath": ".status.components.tts.serving"},
        {
            "name": "REASON",
            "type": "string",
            "priority": 1,
            "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
        },
        {"name": "GATEWAY", "type": "string", "priority": 1, "jsonPath": ".status.gateway.url"},
        _age_column(),
    ],
    name_schema=voiceagent.NAME_SCHEMA,
)

DEFINITIONS = (MODEL_ASSET, VOICE_AGENT)


def _resolve(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Inline a $ref, keeping the referring node's own keywords (description, rules)."""
    if "$ref" not in node:
        return node
    target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
    siblings = {k: v for k, v in node.items() if k != "$ref"}
    rules = target.get("x-kubernetes-validations", []) + siblings.pop(
        "x-kubernetes-validations", []
    )
    target.update(siblings)
    if rules:
        target["x-kubernetes-validations"] = rules
    return target


def _collapse_union(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Optional[X] becomes X (absent = unset); int | str becomes int-or-string."""
    options = [_resolve(o, defs) for o in node.pop("anyOf")]
    if node.get("x-kubernetes-int-or-string"):
        return node
    non_null = [o for o in options if o.get("type") != "null"]
    if {o.get("type") for o in non_null} == {"integer", "string"}:
        pattern = next((o["pattern"] for o in non_null if "pattern" in o), None)
        node["x-kubernetes-int-or-string"] = True
        if pattern:
            node["pattern"] = pattern
        return node
    if len(non_null) != 1:
        raise ValueError(f"cannot express union {options!r} in a structural schema")
    merged = dict(non_null[0])
    rules = merged.get("x-kubernetes-validations", []) + node.pop("x-kubernetes-validations", [])
    merged.update(node)
    if rules:
        merged["x-kubernetes-validations"] = rules
    if merged.get("default", 0) is None:
        del merged["default"]
    return merged


def structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Turn one pydantic JSON Schema node into a structural OpenAPI v3 node."""
    node = _resolve(copy.deepcopy(node), defs)
    while "anyOf" in node:  # Optional[int | str] nests one union in another
        node = _collapse_union(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "properties":
            out[key] = {name: structural(sub, defs) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = structural(value, defs)
        elif key == "const":
            out["enum"] = [value]
        elif key == "default" and value is None:
            continue
        else:
            out[key] = value
    _settle_type(out, node)
    if out.get("type") == "object":
        _settle_object(out)
    return out


def _settle_type(out: dict[str, Any], node: dict[str, Any]) -> None:
    """Every structural node has a type, except int-or-string ones, which must not."""
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if "properties" in out and "type" not in out:
        out["type"] = "object"
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
    elif "type" not in out:
        raise ValueError(f"schema node without a type: {node!r}")


def _settle_object(out: dict[str, Any]) -> None:
    if "additionalProperties" in out and "properties" in out:
        del out["additionalProperties"]
    if out.get("additionalProperties") is False:
        # Kubernetes prunes unknown fields itself; `false` is not allowed here.
        del out["additionalProperties"]
    if out.get("additionalProperties") is True:
        # dict[str, Any]: free-form, which a structural schema says this way.
        del out["additionalProperties"]
        out["x-kubernetes-preserve-unknown-fields"] = True


class _WithFactoryDefaults(GenerateJsonSchema):
    """Also publish defaults made by default_factory, as the apiserver should apply them:
    a spec without `rollout:` then shows rollout's defaults in `kubectl get -o yaml`."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        if "default_factory" not in schema or schema.get("default_factory_takes_data"):
            return super().get_default_value(schema)
        value = schema["default_factory"]()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return value.model_dump(by_alias=True, exclude_none=True, mode="json")
        return value if value not in ({}, []) else NoDefault


def _model_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(
        by_alias=True,
        mode="validation",
        ref_template="#/$defs/{model}",
        schema_generator=_WithFactoryDefaults,
    )
    return structural(raw, raw.get("$defs", {}))


def crd(definition: CrdDefinition) -> dict[str, Any]:
    """The CustomResourceDefinition object for one of our kinds."""
    spec_schema = _model_schema(definition.spec)
    status_schema = _model_schema(definition.status)
    metadata: dict[str, Any] = {"type": "object"}
    if definition.name_schema:
        metadata["properties"] = {"name": definition.name_schema}
    root: dict[str, Any] = {
        "type": "object",
        "description": definition.description,
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": metadata,
            "spec": spec_schema,
            "status": status_schema,
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": definition.name,
            "labels": {"app.kubernetes.io/part-of": "voice-operator"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": definition.kind,
                "listKind": f"{definition.kind}List",
                "plural": definition.plural,
                "singular": definition.kind.lower(),
                "shortNames": definition.short_names,
                "categories": ["voice"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": definition.printer_columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def render(definition: CrdDefinition) -> str:
    header = "# Generated from the pydantic models by `voice-crdgen`; do not edit.\n"
    return header + yaml.safe_dump(crd(definition), sort_keys=False, width=100)


def default_output_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "crds"


def chart_crds_dir() -> Path:
    """Helm installs the CRDs from the chart's own crds/ folder: the same files."""
    return Path(__file__).resolve().parents[3] / "charts" / "voice-operator" / "crds"


def file_name(definition: CrdDefinition) -> str:
    return f"{GROUP}_{definition.plural}.yaml"


def differences(directory: Path) -> list[str]:
    """Files in `directory` that are missing or differ from what the models generate."""
    return [
        file_name(d)
        for d in DEFINITIONS
        if not (directory / file_name(d)).is_file()
        or (directory / file_name(d)).read_text() != render(d)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out",
        type=Path,
        action="append",
        help="CRD folder (repeatable; default: crds/ and the chart's crds/)",
    )
    parser.add_argument("--check", action="store_true", help="fail if a folder is stale")
    args = parser.parse_args(argv)
    folders = args.out or [default_output_dir(), chart_crds_dir()]
    if args.check:
        stale = [f"{folder}/{name}" for folder in folders for name in differences(folder)]
        if stale:
            print(f"stale CRDs: {', '.join(stale)}; run voice-crdgen", file=sys.stderr)
            return 1
        return 0
    for folder in folders:
        folder.mkdir(parents=True, exist_ok=True)
        for d in DEFINITIONS:
            (folder / file_name(d)).write_text(render(d))
    return 0


if __name__ == "__main__":
    sys.exit(main())
