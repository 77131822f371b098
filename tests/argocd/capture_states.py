"""A pytest plugin that keeps every distinct VoiceAgent and ModelAsset state the cluster
tests pass through while they wait, not only the state they end in; the source of
captured/. Not collected as tests; load it explicitly:

    STATE_CAPTURE_DIR=/tmp/states PYTHONPATH=tests/argocd \
      .venv/bin/pytest tests/cluster -m cluster -p capture_states -p no:cacheprovider

It wraps the cluster tests' `wait_for`, so each poll also lists the test's namespace and
writes a state it has not seen (by conditions, phase, progress and generations) to
<test>--<nnn>--<kind>-<name>.json, trimmed to apiVersion, kind, metadata.name and
.generation, spec and status.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from voice_operator.kube import Kube

_state: dict[str, Any] = {"namespace": None, "test": "", "seen": set(), "count": 0}


def _fingerprint(kind: str, obj: dict[str, Any]) -> tuple:
    status = obj.get("status") or {}
    conditions = tuple(
        (c["type"], c["status"], c["reason"], c.get("observedGeneration"))
        for c in status.get("conditions", [])
    )
    return (
        kind,
        obj["metadata"]["name"],
        obj["metadata"].get("generation"),
        status.get("observedGeneration"),
        status.get("phase"),
        conditions,
        json.dumps(status.get("progress"), sort_keys=True),
    )


def snapshot() -> None:
    namespace = _state["namespace"]
    if namespace is None:
        return
    folder = Path(os.environ["STATE_CAPTURE_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    kube = Kube()
    for kind in ("ModelAsset", "VoiceAgent"):
        for obj in kube.list(kind, namespace):
            key = _fingerprint(kind, obj)
            if key in _state["seen"]:
                continue
            _state["seen"].add(key)
            _state["count"] += 1
            meta = obj["metadata"]
            kept = {
                "apiVersion": obj["apiVersion"],
                "kind": kind,
                "metadata": {"name": meta["name"], "generation": meta.get("generation")},
                "spec": obj.get("spec"),
                "status": obj.get("status"),
            }
            name = f"{_state['test']}--{_state['count']:03d}--{kind.lower()}-{meta['name']}.json"
            (folder / name).write_text(json.dumps(kept, indent=2, sort_keys=True) + "\n")


def _watching(wait_for: Callable[..., Any]) -> Callable[..., Any]:
    def watched(what: str, check: Callable[[], Any], *args: Any, **kwargs: Any) -> Any:
        def check_and_keep() -> Any:
            result = check()
            try:
                snapshot()
            except Exception as e:  # keeping states must never fail the test
                print(f"capture_states: {e}", file=sys.stderr)
            return result

        return wait_for(what, check_and_keep, *args, **kwargs)

    watched.capture_states = True  # type: ignore[attr-defined]
    return watched


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Test modules bound `wait_for` at import; conftest's own helpers look it up there.
    modules = {getattr(item, "module", None) for item in items}
    modules |= {
        m
        for m in sys.modules.values()
        if getattr(m, "__file__", "")
        and str(m.__file__).endswith(os.path.join("cluster", "conftest.py"))
    }
    for module in modules:
        original = getattr(module, "wait_for", None)
        if callable(original) and not getattr(original, "capture_states", False):
            module.wait_for = _watching(original)  # type: ignore[union-attr]


@pytest.fixture(autouse=True)
def _capture_namespace(request: pytest.FixtureRequest) -> Iterator[None]:
    _state.update(test=request.node.name, seen=set(), count=0)
    _state["namespace"] = (
        request.getfixturevalue("namespace") if "namespace" in request.fixturenames else None
    )
    yield
    try:
        snapshot()  # the end state too
    finally:
        _state["namespace"] = None
