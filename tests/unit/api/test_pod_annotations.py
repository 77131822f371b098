"""podAnnotations are checked as Kubernetes checks a pod's: by the CRD's rules and, for
objects stored before those rules, by the model the operator parses."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from voice_operator.api.common import POD_ANNOTATIONS_MAX_BYTES
from voice_operator.api.voiceagent import SttComponent

pytestmark = pytest.mark.unit


def stage(annotations: dict[str, str]) -> SttComponent:
    return SttComponent.model_validate({"model": "whisper", "podAnnotations": annotations})


@pytest.mark.parametrize(
    "key",
    ["sidecar.istio.io/inject", "Example.COM/a_b.c-d", "a" * 63, "p" * 253 + "/n"],
    ids=["prefixed", "capital-prefix", "63-name", "253-prefix"],
)
def test_qualified_keys_are_accepted(key):
    assert stage({key: "v"}).pod_annotations == {key: "v"}


@pytest.mark.parametrize(
    "key",
    ["bad key!", "a" * 64, "p" * 254 + "/n", "-a", "a/b/c", "abc\n", ""],
    ids=["space", "64-name", "254-prefix", "leading-dash", "two-slashes", "newline", "empty"],
)
def test_other_keys_are_refused(key):
    with pytest.raises(ValidationError, match="not a qualified name"):
        stage({key: "v"})


def test_keys_and_values_together_are_bounded_in_bytes():
    stage({"a": "x" * (POD_ANNOTATIONS_MAX_BYTES - 1)})
    with pytest.raises(ValidationError, match="more than 65536"):
        stage({"a": "é" * (POD_ANNOTATIONS_MAX_BYTES // 2)})
