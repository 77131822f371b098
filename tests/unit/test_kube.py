"""Skipping writes that change nothing: what counts as "the object already is that"."""

from __future__ import annotations

import pytest

from voice_operator.kube import ANNOTATION_INTENT, covers, with_intent

pytestmark = pytest.mark.unit

DESIRED = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "a-stt", "namespace": "v", "labels": {"x": "1"}},
    "spec": {
        "replicas": 1,
        "template": {
            "spec": {"containers": [{"name": "stt", "env": [{"name": "A", "value": "1"}]}]}
        },
    },
}


def live(**changes: object) -> dict:
    obj = with_intent(DESIRED)
    obj["metadata"].update(resourceVersion="7", generation=2, uid="u")
    obj["spec"]["template"]["spec"]["containers"][0].update(imagePullPolicy="IfNotPresent")
    obj["status"] = {"replicas": 1}
    obj["spec"].update(changes)
    return obj


def test_defaults_and_status_added_by_the_apiserver_do_not_count() -> None:
    assert covers(live(), with_intent(DESIRED))


def test_a_changed_or_missing_field_counts() -> None:
    assert not covers(live(replicas=2), with_intent(DESIRED))
    edited = live()
    edited["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = "2"
    assert not covers(edited, with_intent(DESIRED))
    edited["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "B", "value": "1"})
    assert not covers(edited, with_intent(DESIRED))  # lists match item by item


def test_numbers_compare_by_value_but_not_with_booleans() -> None:
    assert covers({"a": 1.0}, {"a": 1})
    assert not covers({"a": 1}, {"a": True})
    assert covers({"a": {}}, {"a": {"b": None}})  # null: "not set", as apply treats it


def test_the_intent_hash_changes_with_the_intent_only() -> None:
    first = with_intent(DESIRED)["metadata"]["annotations"][ANNOTATION_INTENT]
    assert with_intent(with_intent(DESIRED))["metadata"]["annotations"][ANNOTATION_INTENT] == first
    other = {**DESIRED, "spec": {**DESIRED["spec"], "replicas": 2}}
    assert with_intent(other)["metadata"]["annotations"][ANNOTATION_INTENT] != first
    assert "annotations" not in DESIRED["metadata"]  # the input is not changed
