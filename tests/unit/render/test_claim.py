"""The asset's PVC: owned by the asset (deleted with it) unless the spec keeps it."""

from __future__ import annotations

import pytest

from voice_operator.api.modelasset import ModelAssetSpec
from voice_operator.render.meta import Owner
from voice_operator.render.modelasset import Asset, desired_claim

pytestmark = pytest.mark.unit
OWNER = Owner("ModelAsset", "joe", "voice", "uid-1")


def asset(**storage) -> Asset:
    spec = {
        "engine": "tts",
        "format": "onnx",
        "version": "v1",
        "files": [{"url": "https://h/joe.onnx", "sha256": "a" * 64, "path": "joe.onnx"}],
        "storage": {"size": "1Gi", **storage},
    }
    return Asset(OWNER, ModelAssetSpec.model_validate(spec))


def test_the_claim_is_owned_by_the_asset_by_default():
    claim = desired_claim(asset())
    assert claim is not None
    [owner] = claim["metadata"]["ownerReferences"]
    assert (owner["kind"], owner["name"], owner["uid"]) == ("ModelAsset", "joe", "uid-1")
    assert claim["spec"]["resources"]["requests"]["storage"] == "1Gi"


def test_retain_on_delete_leaves_the_claim_unowned():
    claim = desired_claim(asset(retainOnDelete=True))
    assert claim is not None
    assert not claim["metadata"].get("ownerReferences")


def test_an_existing_claim_is_not_ours_to_make():
    assert desired_claim(asset(existingClaim="shared-models")) is None
