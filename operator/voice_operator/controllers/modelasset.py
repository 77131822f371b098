"""ModelAsset reconcile: observe the asset, its Jobs and the agents using it; plan; execute."""

from __future__ import annotations

import datetime

from voice_operator.controllers.execute import execute
from voice_operator.kube import Kube
from voice_operator.observe import observe_asset
from voice_operator.plan.modelasset import plan_model_asset
from voice_operator.plan.usage import asset_usage
from voice_operator.render.meta import LABEL_ASSET, MANAGED, Owner
from voice_operator.settings import OperatorSettings
from voice_operator.workqueue import Key


def reconcile_model_asset(kube: Kube, settings: OperatorSettings, key: Key) -> float | None:
    # Fresh, not cached: the status this reconcile builds on must include the last write.
    asset = kube.read("ModelAsset", key.name, key.namespace)
    if asset is None:
        return None  # deleted: the garbage collector removes what it owned
    meta = asset["metadata"]
    jobs = kube.list("Job", key.namespace, labels={LABEL_ASSET: key.name, **MANAGED})
    usage = asset_usage(kube.list("VoiceAgent", key.namespace), key.name)
    observation = observe_asset(
        owner=Owner("ModelAsset", meta["name"], meta["namespace"], meta["uid"]),
        generation=meta.get("generation", 0),
        spec=asset.get("spec", {}),
        status=asset.get("status", {}) or {},
        jobs=jobs,
        versions_in_use=usage.versions,
        now=datetime.datetime.now(datetime.UTC).replace(microsecond=0),
        users=usage.users,
        metadata=meta,
    )
    plan = plan_model_asset(observation, settings)
    execute(kube, plan, asset)
    return plan.requeue_after
