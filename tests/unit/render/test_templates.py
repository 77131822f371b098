"""Templates hold structure only: every value goes through tojson, none may be missing."""

from __future__ import annotations

import jinja2
import pytest

from voice_operator.render import render

pytestmark = pytest.mark.unit


def test_a_missing_value_is_an_error_not_an_empty_field():
    with pytest.raises(jinja2.UndefinedError):
        render("service", name="x", namespace="y", labels={}, owner_references=[])


def test_awkward_values_come_back_exactly():
    tricky = "a: b\n- c # d {e} \"f\" 'g' <h>"
    obj = render(
        "configmap",
        name="routes",
        namespace="ns",
        labels={"k": tricky},
        owner_references=[],
        data={"routes.json": tricky},
    )
    assert obj["data"]["routes.json"] == tricky
    assert obj["metadata"]["labels"]["k"] == tricky
