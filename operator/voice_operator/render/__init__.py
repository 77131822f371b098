"""Pure builders: validated specs in, Kubernetes objects out. Each kind has one Jinja2
template holding structure only; every value is computed in Python and rendered with
`tojson`, so a colon or a newline in a value can't break the YAML."""

from __future__ import annotations

from functools import cache
from typing import Any

import jinja2
import yaml


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("voice_operator.render", "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,  # YAML, not HTML; values are escaped by tojson
        keep_trailing_newline=True,
    )


def render(template: str, **values: Any) -> dict[str, Any]:
    """Render `templates/<template>.yaml.j2` into an object."""
    text = _environment().get_template(f"{template}.yaml.j2").render(**values)
    obj = yaml.safe_load(text)
    assert isinstance(obj, dict), template
    return obj
