"""A volume provisioner for the test ground, standing in for a CSI driver the way kwok
stands in for kubelets: it binds every pending claim of the default StorageClass to a new
hostPath PersistentVolume, and deletes released volumes. The real PV controller does the
binding; the real scheduler then places pods that mount the claims. Each volume's folder
is made writable by anyone, so a non-root pod on the real node can use it, and removed
with the volume."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

PROVISIONER = "testground.voiceops.dev/hostpath"
STORAGE_CLASS = "standard"
VOLUMES = Path("/tmp/testground-volumes")


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
        # As most CSI classes: a claim's size may be raised (the volume itself is a folder,
        # so nothing resizes it; the fault tests grow a tmpfs under it themselves).
        "allowVolumeExpansion": True,
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
            "hostPath": {"path": str(VOLUMES / meta.uid)},
            "claimRef": {"namespace": meta.namespace, "name": meta.name, "uid": meta.uid},
        },
    }


def make_folder(path: Path) -> None:
    """The volume's folder, writable by any user a pod runs as (0777: a pod under the
    restricted Pod Security Standard runs as some non-root uid of its own)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o777)


class TmpfsUnavailableError(RuntimeError):
    """A size-limited tmpfs cannot be mounted here (not root, or no mount permission)."""


@contextlib.contextmanager
def size_limited_tmpfs(mount_point: Path, size: str) -> Iterator[Path]:
    """A real volume of `size` (a tmpfs mounted on `mount_point`, made if missing): writes
    beyond it fail with ENOSPC, as on a full PVC. Needs root; unmounted afterwards."""
    if os.geteuid() != 0:
        raise TmpfsUnavailableError("mounting a size-limited tmpfs needs root")
    mount_point.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise TmpfsUnavailableError(f"cannot mount tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def resize_tmpfs(mount_point: Path, size: str) -> None:
    """Grow (or shrink) a tmpfs from size_limited_tmpfs, its files kept."""
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mount_point)], check=True)


def remove_folder(path: Path) -> None:
    if path.parent == VOLUMES:  # never anything else a PV might name
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(path)


class Provisioner:
    def __init__(self, api_client: client.ApiClient) -> None:
        self.core = client.CoreV1Api(api_client)
        self.stopping = threading.Event()
        self.folders: set[Path] = set()  # made and not yet removed; stop() removes them
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
        # The plane goes with the session, and its volumes with it.
        for folder in list(self.folders):
            remove_folder(folder)
        self.folders.clear()

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
            volume = volume_for(claim)
            folder = Path(volume["spec"]["hostPath"]["path"])
            make_folder(folder)
            self.folders.add(folder)
            try:
                self.core.create_persistent_volume(volume)
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
                if volume.spec.host_path:
                    folder = Path(volume.spec.host_path.path)
                    remove_folder(folder)
                    self.folders.discard(folder)
