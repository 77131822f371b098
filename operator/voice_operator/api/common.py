"""Types shared by both resources: the base model, references, conditions, quantities."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from pydantic.json_schema import JsonDict

# A DNS-1123 label: what Kubernetes accepts as a Service name and a label value.
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# A DNS-1123 subdomain: what Kubernetes accepts as most object names (Secrets, PVCs).
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
# A Kubernetes quantity such as 500m, 2Gi or 1e3 (the apiserver's own grammar, simplified).
QUANTITY = r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(([KMGTPE]i)|[mkMGTPE]|([eE][-+]?[0-9]+))?$"

Quantity = Annotated[
    str | int,
    Field(
        description="A Kubernetes quantity, e.g. 500m, 2Gi.",
        json_schema_extra={"x-kubernetes-int-or-string": True, "pattern": QUANTITY},
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


class ResourceRequirements(ApiModel):
    """Compute resources for the component's container (as in a Pod spec)."""

    requests: dict[str, Quantity] | None = Field(
        default=None, description="Minimum resources, e.g. {cpu: 500m, memory: 1Gi}."
    )
    limits: dict[str, Quantity] | None = Field(
        default=None, description="Maximum resources, e.g. {cpu: '2', memory: 2Gi}."
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
