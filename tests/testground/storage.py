"""A volume provisioner for the test ground, standing in for a CSI driver the way kwok
stands in for kubelets: it binds every pending claim of the default StorageClass to a new
hostPath PersistentVolume, and deletes released volumes. The real PV controller does the
binding; the real scheduler then places pods that mount the claims."""

from __future__ import annotations

import threading

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

PROVISIONER = "testground.voiceops.dev/hostpath"
STORAGE_CLASS = "standard"


def storage_class() -> dict:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {
            "name": STORAGE_CLASS,
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
        },
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "Immediate",
    }


def volume_for(claim: client.V1PersistentVolumeClaim) -> dict:
    meta = claim.metadata
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {
            "name": f"pv-{meta.uid}",
            "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER},
        },
        "spec": {
            "capacity": {"storage": claim.spec.resources.requests["storage"]},
            "accessModes": claim.spec.access_modes,
            "persistentVolumeReclaimPolicy": "Delete",
            "storageClassName": claim.spec.storage_class_name or "",
            "hostPath": {"path": f"/tmp/testground-volumes/{meta.uid}"},
            "claimRef": {"namespace": meta.namespace, "name": meta.name, "uid": meta.uid},
        },
    }


class Provisioner:
    def __init__(self, api_client: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api_client)
        self.stopping = threading.Event()
        self.threads = [
            threading.Thread(
                target=self._loop, args=(self._claims,), daemon=True, name="testground-claims"
            ),
            threading.Thread(
                target=self._loop, args=(self._released,), daemon=True, name="testground-volumes"
            ),
        ]

    def start(self) -> Provisioner:
        for t in self.threads:
            t.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=35)

    def _loop(self, once) -> None:
        while not self.stopping.is_set():
            try:
                once()
            except Exception:  # the apiserver restarting or going away at the end
                self.stopping.wait(1)

    def _claims(self) -> None:
        stream = watch.Watch().stream(
            self.core.list_persistent_volume_claim_for_all_namespaces, timeout_seconds=5
        )
        for event in stream:
            claim = event["object"]
            if event["type"] == "DELETED" or claim.spec.volume_name:
                continue
            if claim.spec.storage_class_name not in (None, STORAGE_CLASS):
                continue
            try:
                self.core.create_persistent_volume(volume_for(claim))
            except ApiException as e:
                if e.status != 409:
                    raise

    def _released(self) -> None:
        stream = watch.Watch().stream(self.core.list_persistent_volume, timeout_seconds=5)
        for event in stream:
            volume = event["object"]
            annotations = volume.metadata.annotations or {}
            if (
                event["type"] != "DELETED"
                and volume.status.phase == "Released"
                and annotations.get("pv.kubernetes.io/provisioned-by") == PROVISIONER
            ):
                try:
                    self.core.delete_persistent_volume(volume.metadata.name)
                except ApiException as e:
                    if e.status != 404:
                        raise
