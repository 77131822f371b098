"""The README's field tables come from the same schema as the CRDs."""

from __future__ import annotations

import pytest

from voice_operator.api import docgen

pytestmark = pytest.mark.unit


def test_readme_field_tables_match_the_models():
    assert docgen.main(["--check"]) == 0, "run: python -m voice_operator.api.docgen"


def test_every_spec_field_is_in_the_table():
    text = docgen.README.read_text()
    for field in (
        "spec.storage.existingClaim",
        "spec.stt.external.apiKeySecretRef.name",
        "spec.rollout.autoRollback",
        "spec.llm.settings.systemPrompt",
    ):
        assert f"`{field}`" in text
