"""Pure builders: validated specs in, Kubernetes objects out. Each kind has one Jinja2
template holding structure only; every value is computed in Python and rendered with
`tojson`, so a colon or a newline in a value can't break the YAML."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import jinja2
import yaml


def _dumps(value: Any, **kwargs: Any) -> str:
    def refuse(obj: Any) -> Any:
        if isinstance(obj, jinja2.Undefined):
            obj._fail_with_undefined_error()  # names the missing value
        raise TypeError(f"{type(obj).__name__} is not JSON serializable")

    return json.dumps(value, default=refuse, **kwargs)


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("voice_operator.render", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # YAML, not HTML; values are escaped by tojson
        keep_trailing_newline=True,
    )
    # tojson would otherwise call a missing value "not JSON serializable".
    env.policies["json.dumps_function"] = _dumps
    return env


def render(template: str, **values: Any) -> dict[str, Any]:
    """Render `templates/<template>.yaml.j2` into an object."""
    text = _environment().get_template(f"{template}.yaml.j2").render(**values)
    obj = yaml.safe_load(text)
    assert isinstance(obj, dict), template
    return obj
