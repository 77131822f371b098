"""Field reference tables for the README, made from the same schema as the CRDs, so the
documentation can't drift from what the apiserver accepts.

    python -m voice_operator.api.docgen           # rewrite the tables in README.md
    python -m voice_operator.api.docgen --check   # exit 1 if README.md is stale
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from voice_operator.api.crdgen import DEFINITIONS, CrdDefinition, crd

README = Path(__file__).resolve().parents[3] / "README.md"


def _type(node: dict[str, Any]) -> str:
    if node.get("x-kubernetes-int-or-string"):
        return "quantity"
    if "enum" in node:
        return " \\| ".join(f"`{v}`" for v in node["enum"])
    kind = node.get("type", "")
    if kind == "array":
        return f"list of {_type(node.get('items', {}))}"
    if kind == "object" and "additionalProperties" in node:
        return f"map of {_type(node['additionalProperties'])}"
    return kind


def _limits(node: dict[str, Any]) -> str:
    """The sizes and ranges the apiserver enforces on a field (its rules are in the meaning)."""
    parts = []
    if "minimum" in node or "maximum" in node:
        parts.append(f"{node.get('minimum', '')} to {node.get('maximum', '')}")
    # A length rule in CEL (metadata.name's) is tighter than the schema's maxLength.
    rules = (r["rule"] for r in node.get("x-kubernetes-validations", []))
    sized = [int(m.group(1)) for r in rules if (m := re.fullmatch(r"size\(self\) <= (\d+)", r))]
    if sized or ("maxLength" in node and "enum" not in node):
        parts.append(f"≤ {min(sized or [node['maxLength']])} chars")
    if "maxItems" in node:
        parts.append(f"≤ {node['maxItems']} items")
    if "maxProperties" in node:
        parts.append(f"≤ {node['maxProperties']} entries")
    value = node.get("additionalProperties")
    if isinstance(value, dict) and "maxLength" in value:
        parts.append(f"values ≤ {value['maxLength']} chars")
    return ", ".join(parts)


def _rows(node: dict[str, Any], prefix: str, required: set[str]) -> list[str]:
    rows = []
    for name, sub in node.get("properties", {}).items():
        path = f"{prefix}.{name}"
        default = sub.get("default")
        shown = "" if default is None or isinstance(default, dict) else json.dumps(default)
        description = sub.get("description", "").replace("|", "\\|").replace("\n", " ")
        req = "yes" if name in required else ""
        limits = _limits(sub)
        rows.append(f"| `{path}` | {_type(sub)} | {req} | {shown} | {limits} | {description} |")
        target = sub.get("items", sub) if sub.get("type") == "array" else sub
        if target.get("properties"):
            suffix = "[]" if sub.get("type") == "array" else ""
            rows += _rows(target, path + suffix, set(target.get("required", [])))
    return rows


def table(definition: CrdDefinition, part: str = "spec") -> str:
    schema = crd(definition)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    node = schema["properties"][part]
    lines = [
        "| field | type | required | default | limits | meaning |",
        "|---|---|---|---|---|---|",
    ]
    # metadata.name first: the CRD restricts it, for the children named after it.
    metadata = schema["properties"]["metadata"]
    lines += _rows(metadata, "metadata", set(metadata.get("properties", {})))
    lines += _rows(node, part, set(node.get("required", [])))
    return "\n".join(lines)


def _marker(kind: str) -> re.Pattern[str]:
    return re.compile(rf"(<!-- fields:{kind} -->\n)(.*?)(<!-- /fields:{kind} -->)", re.DOTALL)


def _filled(rendered: str) -> Callable[[re.Match[str]], str]:
    return lambda m: m.group(1) + rendered + "\n" + m.group(3)


def updated(text: str) -> str:
    for definition in DEFINITIONS:
        pattern = _marker(definition.kind)
        if not pattern.search(text):
            raise ValueError(f"README.md lacks the <!-- fields:{definition.kind} --> block")
        text = pattern.sub(_filled(table(definition)), text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--readme", type=Path, default=README)
    args = parser.parse_args(argv)
    text = args.readme.read_text()
    new = updated(text)
    if args.check:
        if new != text:
            print(
                "README.md field tables are stale; run python -m voice_operator.api.docgen",
                file=sys.stderr,
            )
            return 1
        return 0
    args.readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
