"""What a ModelAsset needs next: the pure half of its reconcile.

A version moves Pending -> Downloading (a Job runs the fetcher, which reports progress and
its verified files in status.downloads[<version>]) -> Ready (listed in status.versions).
A failed download leaves status.currentVersion on the previous Ready version. Ready versions
beyond retainVersions that no VoiceAgent uses are deleted by a prune Job.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Literal

from pydantic import ValidationError

from voice_contracts.layout import version_folder
from voice_operator.api.common import Condition
from voice_operator.api.modelasset import (
    DownloadStatus,
    FileStatus,
    ModelAssetSpec,
    ModelAssetStatus,
    Progress,
    VersionStatus,
)
from voice_operator.conditions import EventSpec, set_condition, transition_events
from voice_operator.observe import AssetObservation, JobState
from voice_operator.plan import Plan, field_errors, status_patch
from voice_operator.render.modelasset import (
    Asset,
    claim_name,
    desired_claim,
    desired_fetch_identity,
    desired_fetch_job,
    desired_prune_job,
    fetch_job_name,
    source_hash,
)
from voice_operator.settings import OperatorSettings


@dataclass
class _Outcome:
    """What happened to spec.version in this reconcile."""

    phase: Literal["Pending", "Downloading", "Ready", "Failed"]
    reason: str
    message: str
    progress: Progress | None = None
    events: list[EventSpec] = field(default_factory=list)


def _report_for(job: JobState, report: DownloadStatus | None) -> DownloadStatus | None:
    """The fetcher's report if it was written by this Job's run (not an older attempt)."""
    if report is None or report.updated_at is None:
        return None
    created = job.created
    if created is not None and report.updated_at < created - datetime.timedelta(seconds=5):
        return None
    return report


def _files_match(spec: ModelAssetSpec, files: list[FileStatus]) -> bool:
    if spec.format == "ollama":
        return True
    wanted = {(f.path, f.sha256) for f in spec.files or []}
    return wanted == {(f.path, f.sha256) for f in files}


def _progress(report: DownloadStatus | None) -> Progress | None:
    if report is None:
        return None
    total = max(report.total_bytes, 0)
    done = min(max(report.done_bytes, 0), total) if total else max(report.done_bytes, 0)
    percent = int(done * 100 / total) if total else 0
    return Progress(done_bytes=done, total_bytes=total, percent=percent)


def _download_outcome(
    asset: Asset,
    status: ModelAssetStatus,
    jobs: list[JobState],
    plan: Plan,
    settings: OperatorSettings,
    now: datetime.datetime,
) -> tuple[_Outcome, VersionStatus | None]:
    """Drive spec.version's download; returns its outcome and, once verified, its record."""
    spec = asset.spec
    name = fetch_job_name(asset)
    job = next((j for j in jobs if j.name == name), None)
    if job is None:
        plan.apply.append(desired_fetch_job(asset, settings))
        return _Outcome("Downloading", "JobCreated", f"downloading version {spec.version}"), None
    report = _report_for(job, status.downloads.get(spec.version))
    if report and report.phase == "Verified":
        if not _files_match(spec, report.files or []):
            return _Outcome(
                "Failed",
                "ChecksumMismatch",
                f"the files reported for {spec.version} differ from spec.files",
            ), None
        files = report.files or []
        record = VersionStatus(
            version=spec.version,
            path=version_folder(asset.name, spec.version),
            files=files,
            bytes=sum(f.bytes for f in files),
            ready_at=report.updated_at or now,
            source=source_hash(spec),
            main_file=spec.loaded_path,
            format=spec.format,
        )
        plan.delete.append(("Job", name))
        total = record.bytes
        return _Outcome(
            "Ready",
            "Verified",
            f"version {spec.version} is verified",
            Progress(done_bytes=total, total_bytes=total, percent=100),
        ), record
    if report and report.phase == "Failed":
        return _Outcome(
            "Failed",
            report.reason or "DownloadFailed",
            report.message or f"downloading {spec.version} failed",
            _progress(report),
        ), None
    failed = job.failed
    if failed:
        return _Outcome(
            "Failed",
            "JobFailed",
            f"download Job {name} failed: {failed.reason} {failed.message}".strip(),
            _progress(report),
        ), None
    complete = job.complete
    if complete:
        finished = complete.at or now
        waited = (now - finished).total_seconds()
        if waited >= settings.report_timeout_seconds:
            return _Outcome(
                "Failed",
                "NoReport",
                f"download Job {name} completed but the fetcher never reported verified files",
            ), None
        plan.requeue(settings.report_timeout_seconds - waited)
    return _Outcome(
        "Downloading", "Downloading", f"downloading version {spec.version}", _progress(report)
    ), None


def _retention(
    asset: Asset,
    versions: list[VersionStatus],
    keep_always: set[str],
    jobs: list[JobState],
    plan: Plan,
    settings: OperatorSettings,
) -> tuple[list[VersionStatus], list[str]]:
    """Prune Ready versions beyond retainVersions that nobody uses.

    Returns the versions still listed and the versions whose deletion just finished.
    """
    newest_first = sorted(versions, key=lambda v: v.ready_at or datetime.datetime.min, reverse=True)
    listed = {v.version for v in versions}
    prune_jobs = [j for j in jobs if j.component == "prune"]
    deleted: set[str] = set()
    for job in prune_jobs:
        if job.complete:
            deleted |= {v for v in job.prune_targets if v in listed}
    remaining = [v for v in newest_first if v.version not in deleted]
    keep = {v.version for v in remaining[: asset.spec.retain_versions]} | keep_always
    prune = sorted(v.version for v in remaining if v.version not in keep)
    if prune:
        prune_job = desired_prune_job(asset, prune, settings)
        if not any(j.name == prune_job["metadata"]["name"] for j in prune_jobs):
            plan.apply.append(prune_job)
    return remaining, sorted(deleted)


def plan_model_asset(obs: AssetObservation, settings: OperatorSettings) -> Plan:
    plan = Plan()
    status = obs.status
    if isinstance(obs.spec, ValidationError):
        outcome = _Outcome("Failed", "InvalidSpec", field_errors(obs.spec))
        return _finish(
            plan, obs, status, outcome, status.versions, status.current_version, [], None
        )
    spec = obs.spec
    asset = Asset(obs.owner, spec)
    if obs.deleting:
        # Nothing new for an asset on its way out; what it has keeps serving meanwhile.
        outcome = _Outcome(
            "Ready" if status.current_version else "Pending",
            "Deleting",
            "deletion requested",
            status.progress,
        )
        return _finish(
            plan, obs, status, outcome, status.versions, status.current_version, [], None
        )
    claim = desired_claim(asset)
    if claim:
        plan.apply.append(claim)
    plan.apply.extend(desired_fetch_identity(asset))

    ready = {v.version: v for v in status.versions}
    versions = list(status.versions)
    if spec.version in ready:
        if ready[spec.version].source not in (None, source_hash(spec)):
            outcome = _Outcome(
                "Failed",
                "VersionImmutable",
                f"spec.version {spec.version} is already on disk with other files; give "
                "changed files a new version label",
            )
        else:
            size = ready[spec.version].bytes
            outcome = _Outcome(
                "Ready",
                "Verified",
                f"version {spec.version} is ready",
                Progress(done_bytes=size, total_bytes=size, percent=100),
            )
    else:
        outcome, record = _download_outcome(asset, status, obs.jobs, plan, settings, obs.now)
        if record:
            versions = [record, *versions]

    # Fetch Jobs of older attempts (the spec changed under them) are superseded.
    current_job = fetch_job_name(asset)
    for job in obs.jobs:
        if job.component == "fetch" and job.name != current_job:
            plan.delete.append(("Job", job.name))

    ready_names = {v.version for v in versions}
    current: str | None
    if spec.version in ready_names and outcome.phase == "Ready":
        current = spec.version
    elif status.current_version in ready_names:
        current = status.current_version
    else:
        newest = sorted(versions, key=lambda v: v.ready_at or datetime.datetime.min)
        current = newest[-1].version if newest else None
    keep = set(obs.versions_in_use) | {spec.version} | ({current} if current else set())
    versions, pruned = _retention(asset, versions, keep, obs.jobs, plan, settings)
    if pruned:
        outcome.events.append(
            EventSpec(
                "Normal", "VersionsPruned", f"deleted versions {', '.join(pruned)} from the volume"
            )
        )
    return _finish(plan, obs, status, outcome, versions, current, pruned, claim_name(asset))


def _finish(
    plan: Plan,
    obs: AssetObservation,
    status: ModelAssetStatus,
    outcome: _Outcome,
    versions: list[VersionStatus],
    current: str | None,
    pruned: list[str],
    claim: str | None,
) -> Plan:
    gen = obs.generation
    plan.reasons.append(f"spec.version: {outcome.phase} ({outcome.reason}): {outcome.message}")
    if pruned:
        plan.reasons.append(f"pruned versions {', '.join(pruned)}")
    conditions: list[Condition] = status.conditions
    ready = outcome.phase == "Ready"
    conditions = set_condition(
        conditions,
        "Ready",
        "True" if ready else "False",
        outcome.reason,
        outcome.message,
        gen,
        obs.now,
    )
    conditions = set_condition(
        conditions,
        "Downloading",
        "True" if outcome.phase == "Downloading" else "False",
        outcome.reason if outcome.phase == "Downloading" else "Idle",
        outcome.message if outcome.phase == "Downloading" else "no download running",
        gen,
        obs.now,
    )
    failed = outcome.phase == "Failed"
    if failed and current:
        message = f"{outcome.message}; still serving version {current}"
    else:
        message = outcome.message if failed else ""
    conditions = set_condition(
        conditions,
        "Failed",
        "True" if failed else "False",
        outcome.reason if failed else "NoFailure",
        message,
        gen,
        obs.now,
    )
    conditions = set_condition(conditions, "InUse", *_in_use(obs), gen, obs.now)
    _protect(plan, obs)
    new = ModelAssetStatus(
        phase=outcome.phase,
        conditions=conditions,
        current_version=current,
        versions=versions,
        # A failed download has no progress to show, however many bytes it had fetched.
        progress=None if failed else outcome.progress,
        claim_name=claim or status.claim_name,
        observed_generation=gen,
    )
    before = status.wire()
    after = {k: v for k, v in before.items() if k == "downloads"}
    # status.downloads is the fetchers' to write; the operator only removes pruned versions.
    after.update({k: v for k, v in new.wire().items() if k != "downloads"})
    if pruned and "downloads" in after:
        # Leave fetcher reports alone, except for versions that no longer exist.
        after["downloads"] = {k: v for k, v in after["downloads"].items() if k not in pruned}
    patch = status_patch(before, after)
    if patch and pruned and "downloads" in before:
        patch["status"]["downloads"] = {v: None for v in pruned if v in before["downloads"]}
    plan.status_patch = patch
    plan.events = [
        # Deleting an asset that serves is refused for now: that is worth a warning.
        EventSpec("Warning", e.reason, e.message, e.transition)
        if e.reason == "DeletionBlocked"
        else e
        for e in transition_events(status.conditions, conditions)
    ] + outcome.events
    return plan


# Kept on an asset while an agent names it or serves from it, so that deleting it waits
# until nothing needs its volume (a pod restarting would find its model gone).
IN_USE_FINALIZER = "voiceops.dev/in-use"


def _in_use(obs: AssetObservation) -> tuple[Literal["True", "False"], str, str]:
    if not obs.users:
        return "False", "Unused", "no VoiceAgent names or serves this asset"
    users = ", ".join(obs.users)
    if obs.deleting:
        return (
            "True",
            "DeletionBlocked",
            f"deletion waits until no VoiceAgent uses it; used by {users}: point their "
            "stages at another asset (or delete them) and it goes",
        )
    return "True", "InUse", f"used by VoiceAgent {users}"


def _protect(plan: Plan, obs: AssetObservation) -> None:
    """The in-use finalizer on while used, off once not (which lets a deletion finish)."""
    has = IN_USE_FINALIZER in obs.finalizers
    if bool(obs.users) == has or (obs.deleting and not has):
        return
    kept = [f for f in obs.finalizers if f != IN_USE_FINALIZER]
    finalizers = [*kept, IN_USE_FINALIZER] if obs.users else kept
    # With the resourceVersion, a finalizer someone else adds meanwhile is not lost (409).
    plan.metadata_patch = {
        "metadata": {"finalizers": finalizers, "resourceVersion": obs.resource_version}
    }
