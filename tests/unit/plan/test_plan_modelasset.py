"""The ModelAsset plan as a table: spec + observed Jobs and reports -> children and status."""

from __future__ import annotations

import datetime

import pytest

from voice_operator.api.modelasset import ModelAssetSpec
from voice_operator.observe import observe_asset
from voice_operator.plan.modelasset import plan_model_asset
from voice_operator.render.meta import Owner
from voice_operator.render.modelasset import Asset, fetch_job_name, source_hash
from voice_operator.settings import OperatorSettings

pytestmark = pytest.mark.unit
NOW = datetime.datetime(2026, 11, 24, 12, 0, tzinfo=datetime.UTC)
OWNER = Owner("ModelAsset", "joe", "voice", "uid-1")
SETTINGS = OperatorSettings()
SHA = "a" * 64


def spec(version: str = "v1", **extra) -> dict:
    return {
        "engine": "tts",
        "format": "onnx",
        "version": version,
        "files": [
            {"url": "https://h/joe.onnx", "sha256": SHA, "path": "joe.onnx"},
            {"url": "https://h/joe.onnx.json", "sha256": "b" * 64, "path": "joe.onnx.json"},
        ],
        "storage": {"size": "1Gi"},
        **extra,
    }


def job(
    version: str = "v1",
    *,
    condition: str | None = None,
    created: datetime.datetime = NOW,
    s: dict | None = None,
    component: str = "fetch",
    name: str | None = None,
) -> dict:
    asset = Asset(OWNER, ModelAssetSpec.model_validate(s or spec(version)))
    return {
        "metadata": {
            "name": name or fetch_job_name(asset),
            "creationTimestamp": created.isoformat(),
            "labels": {"app.kubernetes.io/component": component, "voiceops.dev/version": version},
            "annotations": {},
        },
        "status": {
            "conditions": [
                {"type": condition, "status": "True", "lastTransitionTime": NOW.isoformat()}
            ]
            if condition
            else []
        },
    }


def report(phase: str, version: str = "v1", at: datetime.datetime = NOW, **extra) -> dict:
    return {version: {"phase": phase, "updatedAt": at.isoformat(), **extra}}


def ready_version(version: str, at: datetime.datetime, s: dict | None = None) -> dict:
    return {
        "version": version,
        "path": f"/joe/{version}",
        "bytes": 10,
        "files": [],
        "readyAt": at.isoformat(),
        "source": source_hash(ModelAssetSpec.model_validate(s or spec(version))),
    }


def plan(
    s: dict, status: dict | None = None, jobs: list | None = None, in_use: frozenset = frozenset()
):
    return plan_model_asset(
        observe_asset(
            owner=OWNER,
            generation=3,
            spec=s,
            status=status or {},
            jobs=jobs or [],
            versions_in_use=in_use,
            now=NOW,
        ),
        SETTINGS,
    )


def kinds(p) -> list[str]:
    return [o["kind"] for o in p.apply]


def test_new_asset_gets_a_claim_an_identity_and_a_download_job():
    p = plan(spec())
    assert kinds(p) == ["PersistentVolumeClaim", "ServiceAccount", "Role", "RoleBinding", "Job"]
    role = p.apply[2]
    assert role["rules"] == [
        {
            "apiGroups": ["voiceops.dev"],
            "resources": ["modelassets/status"],
            "resourceNames": ["joe"],
            "verbs": ["patch"],
        }
    ]
    status = p.status_patch["status"]
    assert (status["phase"], status["observedGeneration"]) == ("Downloading", 3)


def test_existing_claim_is_used_not_created():
    p = plan(spec(storage={"existingClaim": "shared"}))
    assert "PersistentVolumeClaim" not in kinds(p)
    env = {
        e["name"]: e.get("value")
        for e in p.apply[-1]["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["FETCH_DEST"] == "/models/joe/v1"
    assert p.apply[-1]["spec"]["template"]["spec"]["volumes"][0]["persistentVolumeClaim"] == {
        "claimName": "shared"
    }


def test_verified_report_makes_the_version_ready_and_retires_the_job():
    files = [
        {"path": "joe.onnx", "sha256": SHA, "bytes": 7},
        {"path": "joe.onnx.json", "sha256": "b" * 64, "bytes": 3},
    ]
    p = plan(spec(), {"downloads": report("Verified", files=files)}, [job(condition="Complete")])
    status = p.status_patch["status"]
    assert status["phase"] == "Ready"
    assert status["currentVersion"] == "v1"
    assert status["versions"][0]["bytes"] == 10
    assert status["versions"][0]["mainFile"] == "joe.onnx"
    assert status["progress"] == {"doneBytes": 10, "totalBytes": 10, "percent": 100}
    assert ("Job", job()["metadata"]["name"]) in p.delete


def test_a_report_from_an_older_attempt_is_ignored():
    old = NOW - datetime.timedelta(minutes=10)
    p = plan(spec(), {"downloads": report("Failed", at=old, reason="HTTPError")}, [job()])
    assert p.status_patch["status"]["phase"] == "Downloading"


def test_verified_files_that_differ_from_the_spec_are_refused():
    files = [{"path": "joe.onnx", "sha256": "c" * 64, "bytes": 7}]
    p = plan(spec(), {"downloads": report("Verified", files=files)}, [job()])
    assert p.status_patch["status"]["phase"] == "Failed"


@pytest.mark.parametrize(
    ("downloads", "job_condition", "reason"),
    [
        (report("Failed", reason="ChecksumMismatch", message="bad"), None, "ChecksumMismatch"),
        ({}, "Failed", "JobFailed"),
    ],
)
def test_failures_keep_the_current_version(downloads, job_condition, reason):
    earlier = NOW - datetime.timedelta(days=1)
    status = {
        "currentVersion": "v0",
        "versions": [ready_version("v0", earlier, spec("v0"))],
        "downloads": downloads,
    }
    p = plan(spec(), status, [job(condition=job_condition)])
    new = {**status, **p.status_patch["status"]}
    assert (new["phase"], new["currentVersion"]) == ("Failed", "v0")
    failed = next(c for c in new["conditions"] if c["type"] == "Failed")
    assert (failed["status"], failed["reason"]) == ("True", reason)
    assert failed["message"].endswith("still serving version v0")
    assert ("Warning", reason) in [(e.type, e.reason) for e in p.events]


def test_job_complete_without_a_report_waits_then_fails():
    done = NOW - datetime.timedelta(seconds=30)
    completed = job(condition="Complete")
    completed["status"]["conditions"][0]["lastTransitionTime"] = done.isoformat()
    p = plan(spec(), {}, [completed])
    assert p.status_patch["status"]["phase"] == "Downloading"
    assert p.requeue_after == pytest.approx(SETTINGS.report_timeout_seconds - 30)
    completed["status"]["conditions"][0]["lastTransitionTime"] = (
        NOW - datetime.timedelta(hours=1)
    ).isoformat()
    assert (
        plan(spec(), {}, [completed]).status_patch["status"]["conditions"][2]["reason"]
        == "NoReport"
    )


def test_a_version_label_may_not_change_its_files():
    earlier = NOW - datetime.timedelta(days=1)
    status = {"currentVersion": "v1", "versions": [ready_version("v1", earlier)]}
    changed = spec()
    changed["files"][0]["sha256"] = "d" * 64
    p = plan(changed, status)
    assert p.status_patch["status"]["conditions"][0]["reason"] == "VersionImmutable"
    assert "Job" not in kinds(p)


def test_superseded_download_jobs_are_deleted():
    stale = job(name="joe-fetch-deadbeef")
    p = plan(spec(), {}, [stale])
    assert ("Job", "joe-fetch-deadbeef") in p.delete


def test_retention_keeps_the_newest_and_the_versions_in_use():
    versions = [
        ready_version(f"v{i}", NOW - datetime.timedelta(days=10 - i), spec(f"v{i}"))
        for i in range(1, 6)
    ]
    status = {"currentVersion": "v5", "versions": versions}
    p = plan(spec("v5", retainVersions=2), status, in_use=frozenset({"v1"}))
    [prune] = [o for o in p.apply if o["kind"] == "Job"]
    assert prune["metadata"]["annotations"]["voiceops.dev/prune"] == "v2,v3"
    assert prune["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "rm",
        "-rf",
        "--",
        "/models/joe/v2",
        "/models/joe/v3",
    ]
    assert prune["spec"]["ttlSecondsAfterFinished"] == 3600


def test_finished_prune_removes_versions_and_their_reports():
    versions = [
        ready_version(f"v{i}", NOW - datetime.timedelta(days=10 - i), spec(f"v{i}"))
        for i in range(1, 4)
    ]
    prune = job(component="prune", name="joe-prune-1", condition="Complete")
    prune["metadata"]["annotations"] = {"voiceops.dev/prune": "v1"}
    status = {
        "currentVersion": "v3",
        "versions": versions,
        "downloads": {"v1": {"phase": "Verified"}, "v3": {"phase": "Verified"}},
    }
    p = plan(spec("v3", retainVersions=2), status, [prune])
    new = p.status_patch["status"]
    assert [v["version"] for v in new["versions"]] == ["v3", "v2"]
    assert new["downloads"] == {"v1": None}
    assert [e.reason for e in p.events].count("VersionsPruned") == 1
    # Once recorded, the finished Job is no news.
    again = plan(
        spec("v3", retainVersions=2),
        {**status, **new, "downloads": {"v3": {"phase": "Verified"}}},
        [prune],
    )
    assert again.events == []
    assert again.status_patch is None


def test_invalid_spec_names_the_field_and_touches_nothing():
    bad = spec()
    bad["files"][0]["path"] = "../etc/passwd"
    p = plan(bad)
    assert p.apply == []
    ready = p.status_patch["status"]["conditions"][0]
    assert ready["reason"] == "InvalidSpec"
    assert ready["message"].startswith("spec.files[0].path:")


def test_no_change_no_patch():
    first = plan(spec(), {}, [job()])
    second = plan(spec(), {**first.status_patch["status"]}, [job()])
    assert second.status_patch is None
    assert second.events == []


def _observed(s: dict, users: tuple[str, ...], **metadata) -> object:
    return observe_asset(
        owner=OWNER,
        generation=3,
        spec=s,
        status={},
        jobs=[],
        versions_in_use=frozenset(),
        now=NOW,
        users=users,
        metadata={"resourceVersion": "41", **metadata},
    )


def _condition(p, type_: str) -> dict:
    return next(c for c in p.status_patch["status"]["conditions"] if c["type"] == type_)


def test_an_asset_in_use_keeps_a_finalizer_and_says_who_uses_it():
    p = plan_model_asset(_observed(spec(), ("support",), finalizers=["x/other"]), SETTINGS)
    assert p.metadata_patch == {
        "metadata": {"finalizers": ["x/other", "voiceops.dev/in-use"], "resourceVersion": "41"}
    }
    assert _condition(p, "InUse")["message"] == "used by VoiceAgent support"
    p = plan_model_asset(_observed(spec(), (), finalizers=["voiceops.dev/in-use"]), SETTINGS)
    assert p.metadata_patch == {"metadata": {"finalizers": [], "resourceVersion": "41"}}
    assert _condition(p, "InUse")["status"] == "False"


def test_deleting_an_asset_in_use_waits_and_warns_then_goes_once_unused():
    deleting = {"deletionTimestamp": NOW.isoformat(), "finalizers": ["voiceops.dev/in-use"]}
    p = plan_model_asset(_observed(spec(), ("support",), **deleting), SETTINGS)
    assert p.metadata_patch is None  # the finalizer stays
    assert p.apply == []  # nothing new for an asset on its way out
    blocked = _condition(p, "InUse")
    assert (blocked["status"], blocked["reason"]) == ("True", "DeletionBlocked")
    assert "support" in blocked["message"]
    assert [(e.type, e.reason) for e in p.events if e.reason == "DeletionBlocked"] == [
        ("Warning", "DeletionBlocked")
    ]
    p = plan_model_asset(_observed(spec(), (), **deleting), SETTINGS)
    assert p.metadata_patch == {"metadata": {"finalizers": [], "resourceVersion": "41"}}


def test_growing_the_volume_downloads_a_version_again():
    small = Asset(OWNER, ModelAssetSpec.model_validate(spec()))
    grown = Asset(OWNER, ModelAssetSpec.model_validate({**spec(), "storage": {"size": "3Gi"}}))
    assert fetch_job_name(small) != fetch_job_name(grown)
    assert source_hash(small.spec) == source_hash(grown.spec)  # the same files, still v1
