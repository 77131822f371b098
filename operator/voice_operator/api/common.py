"""Types shared by both resources: the base model, references, conditions, quantities."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal, cast

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonDict

# A DNS-1035 label: a lower-case letter first, then [-a-z0-9], alphanumeric last. What every
# apiserver accepts as a Service name (a leading digit is refused by older ones).
DNS_1035_LABEL = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
# A DNS-1123 subdomain: what Kubernetes accepts as most object names (Secrets, PVCs).
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A Kubernetes quantity such as 500m, 2Gi or 1e3 (the apiserver's own grammar, simplified).
QUANTITY = r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(([KMGTPE]i)|[mkMGTPE]|([eE][-+]?[0-9]+))?$"
# A qualified name, as Kubernetes checks annotation keys and resource names: an optional
# DNS-subdomain prefix (at most 253) and '/', then a name of at most 63 characters of
# [-A-Za-z0-9_.] that starts and ends alphanumeric. (Kubernetes lower-cases an annotation
# key before checking it, so its prefix may have capitals.)
QUALIFIED_NAME = (
    r"^([A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?(\.[A-Za-z0-9]([-A-Za-z0-9]*[A-Za-z0-9])?)*/)?"
    r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)
QUALIFIED_NAME_MAX = 253 + 1 + 63

Quantity = Annotated[
    str | int,
    Field(
        description="A Kubernetes quantity, e.g. 500m, 2Gi.",
        json_schema_extra={
            "x-kubernetes-int-or-string": True,
            "pattern": QUANTITY,
            "maxLength": 64,
        },
    ),
]


def cel(rule: str, message: str, field_path: str | None = None) -> JsonDict:
    """One `x-kubernetes-validations` entry; the message should name the field for the user."""
    entry: JsonDict = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def validations(*rules: JsonDict) -> JsonDict:
    """`json_schema_extra` carrying CEL rules, for a model's config or a Field."""
    return {"x-kubernetes-validations": cast(list[Any], list(rules))}


def object_name_schema(max_length: int, why: str) -> JsonDict:
    """The schema of a resource's metadata.name: a DNS-1035 label of at most `max_length`
    characters, `why` saying which child name needs that. The apiserver reports a
    violation as `metadata.name: Invalid value: "<name>": metadata.name must ...`."""
    label = (
        "a DNS-1035 label (lower-case letters, digits and '-', starting with a letter and "
        "ending with a letter or digit)"
    )
    return {
        "type": "string",
        "description": f"The resource's name: {label} of at most {max_length} characters, "
        f"because {why}.",
        # The apiserver's own limit, also what bounds the cost of the rules below.
        "maxLength": 253,
        "x-kubernetes-validations": [
            cel(
                f"size(self) <= {max_length}",
                f"metadata.name must be at most {max_length} characters, because {why}",
            ),
            cel(
                f"self.matches(r'{DNS_1035_LABEL}')",
                f"metadata.name must be {label}, without dots: child names and label "
                "values are made from it",
            ),
        ],
    }


def _qualified_keys_rule(what: str) -> JsonDict:
    valid = f"k.indexOf('/') <= 253 && k.matches(r'{QUALIFIED_NAME}')"
    # The message quotes the first bad key, cut to 100 characters (CRD rules have no
    # cel.bind, hence the repetition).
    bad = f"self.filter(k, !({valid}))[0]"
    message = (
        f"\"{what} '\" + (size({bad}) > 100 ? {bad}.substring(0, 100) + '...' : {bad}) + "
        "\"' is not a qualified name: an optional DNS-subdomain prefix of at most 253 "
        "characters and '/', then at most 63 characters of [-A-Za-z0-9_.] starting and "
        'ending with a letter or digit"'
    )
    return {"rule": f"self.all(k, {valid})", "messageExpression": message}


def _check_qualified_keys(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """The same key rule as the CEL, for objects the apiserver stored before it existed."""
    for key in value or {}:
        if key.find("/") > 253 or not re.fullmatch(QUALIFIED_NAME, key):
            raise ValueError(f"key {key[:100]!r} is not a qualified name")
    return value


# Keys and values of one stage's podAnnotations together, in bytes. Kubernetes allows a pod
# 256 KiB; the agent keeps up to three copies of each stage's annotations (spec, and in
# status the last good and the draining revision), and the whole object must fit etcd's
# 1.5 MiB request limit, so three stages of 64 KiB each leave room for the rest.
POD_ANNOTATIONS_MAX_BYTES = 64 * 1024
POD_ANNOTATIONS_MAX_COUNT = 128


# The gateway's pod annotations have no copies in status; a quarter of a stage's is plenty
# for a mesh or an agent's hints and keeps the whole spec's bound low.
GATEWAY_POD_ANNOTATIONS_MAX_BYTES = 16 * 1024


def _annotation_size_check(max_bytes: int) -> Callable[[dict[str, str] | None], Any]:
    def check(value: dict[str, str] | None) -> dict[str, str] | None:
        total = sum(len(k.encode()) + len(v.encode()) for k, v in (value or {}).items())
        if total > max_bytes:
            raise ValueError(f"keys and values total {total} bytes, more than {max_bytes}")
        return value

    return check


def pod_annotations_field(
    description: str, max_bytes: int = POD_ANNOTATIONS_MAX_BYTES, why: str = ""
) -> Any:
    """Annotations copied onto pods, checked as Kubernetes checks a pod's (key syntax,
    total size), so a bad one is refused on the resource with the field named and never
    fails the child's apply."""
    return Field(
        default=None,
        description=f"{description} Keys are qualified names (as Kubernetes checks them); "
        f"keys and values together at most {max_bytes // 1024} KiB{why}.",
        max_length=POD_ANNOTATIONS_MAX_COUNT,
        json_schema_extra=validations(
            _qualified_keys_rule("annotation key"),
            cel(
                f"self.map(k, size(bytes(k)) + size(bytes(self[k]))).sum() <= {max_bytes}",
                "annotation keys and values together must be at most "
                f"{max_bytes // 1024} KiB ({max_bytes} bytes)",
            ),
        ),
    )


STAGE_ANNOTATIONS_WHY = " (a pod may have 256 KiB, but the agent's status keeps copies of them)"
PodAnnotations = Annotated[
    dict[str, Annotated[str, Field(max_length=POD_ANNOTATIONS_MAX_BYTES)]] | None,
    AfterValidator(_check_qualified_keys),
    AfterValidator(_annotation_size_check(POD_ANNOTATIONS_MAX_BYTES)),
]
GatewayPodAnnotations = Annotated[
    dict[str, Annotated[str, Field(max_length=GATEWAY_POD_ANNOTATIONS_MAX_BYTES)]] | None,
    AfterValidator(_check_qualified_keys),
    AfterValidator(_annotation_size_check(GATEWAY_POD_ANNOTATIONS_MAX_BYTES)),
]


class ApiModel(BaseModel):
    """Base of every API type: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_enum_values=True,
    )

    def wire(self) -> dict[str, Any]:
        """The object as the API stores it: camelCase keys, unset optionals left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class StatusModel(ApiModel):
    """Status types tolerate fields they don't know (written by a newer operator)."""

    model_config = ConfigDict(extra="ignore", frozen=False)


class SecretKeyRef(ApiModel):
    """A key in a Secret of the resource's own namespace."""

    name: str = Field(
        description="Name of the Secret (same namespace).",
        min_length=1,
        max_length=253,
        pattern=DNS_SUBDOMAIN,
    )
    key: str = Field(
        description="Key inside the Secret's data.",
        min_length=1,
        max_length=253,
        pattern=r"^[-._a-zA-Z0-9]+$",
    )


RESOURCES_MAX_COUNT = 16
ResourceList = Annotated[dict[str, Quantity] | None, AfterValidator(_check_qualified_keys)]


class ResourceRequirements(ApiModel):
    """Compute resources for the component's container (as in a Pod spec)."""

    requests: ResourceList = Field(
        default=None,
        description="Minimum resources, e.g. {cpu: 500m, memory: 1Gi}.",
        max_length=RESOURCES_MAX_COUNT,
        json_schema_extra=validations(_qualified_keys_rule("resource name")),
    )
    limits: ResourceList = Field(
        default=None,
        description="Maximum resources, e.g. {cpu: '2', memory: 2Gi}.",
        max_length=RESOURCES_MAX_COUNT,
        json_schema_extra=validations(_qualified_keys_rule("resource name")),
    )


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(StatusModel):
    """A condition the Kubernetes way (metav1.Condition)."""

    type: str = Field(description="Condition type, e.g. Ready.")
    status: ConditionStatus = Field(description="True, False or Unknown.")
    reason: str = Field(description="CamelCase reason for the last transition.")
    message: str = Field(default="", description="Human-readable details.")
    observed_generation: int | None = Field(
        default=None, description="The .metadata.generation the condition was set for."
    )
    last_transition_time: datetime | None = Field(
        default=None, description="When the status last changed."
    )
