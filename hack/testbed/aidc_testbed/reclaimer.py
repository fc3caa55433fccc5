"""The volume pool's reclaimer: a released pool volume is emptied and offered to claims again.

The pool's volumes are ``Retain``ed, and this process does what an administrator does with a
retained volume whose claim is gone: it empties the volume's folder, then removes the volume's
``claimRef``, and the real persistent-volume controller makes the volume Available again.

Why not kube-controller-manager's own recycler (reclaim policy ``Recycle``, deprecated upstream):
its hostPath plugin hands every recycle the same pod template object and sets the recycler pod's
name on it (``pkg/volume/hostpath/host_path.go`` ``Recycle``, then
``recyclerclient.internalRecycleVolumeByWatchingPodUntilCompletion``, Kubernetes v1.37.2). Two
volumes released together, as a deleted namespace's claims are, can each create the other's pod;
one recycle then watches for a pod that never comes until its watch times out, 30 to 60 minutes
later, and its volume stays Released for the rest of a test session.

Run by the test bed as one of its processes: ``python -m aidc_testbed.reclaimer --kubeconfig K
--volumes-dir D``. It empties only folders inside ``D``: a volume labelled as the pool's by anyone
else, with a hostPath elsewhere, stays Released.
Each watch lasts ``RESYNC_SECONDS`` and starts with every pool volume, so a volume whose reclaim
failed (a conflict, a folder it could not empty) is tried again.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
import traceback
from pathlib import Path

from kubernetes import client, watch
from kubernetes import config as kube_config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from aidc_testbed.storage import POOL_LABEL

RESYNC_SECONDS = 30


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def empty(folder: Path) -> None:
    """Remove everything inside ``folder`` (a recycler's scrub), keeping the folder itself."""
    if not folder.is_dir():
        return
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def pool_folder(volume: client.V1PersistentVolume, volumes_dir: Path) -> Path | None:
    """The volume's host folder when it is one of the bed's, directly inside ``volumes_dir``."""
    host_path = volume.spec.host_path
    if host_path is None:
        return None
    folder = Path(host_path.path).resolve()
    return folder if folder.parent == volumes_dir.resolve() else None


def reclaim(core: client.CoreV1Api, volume: client.V1PersistentVolume, volumes_dir: Path) -> None:
    """Empty a Released pool volume and remove its claimRef; leave any other volume alone.

    The patch carries the volume's resourceVersion, so a volume that changed since it was read
    (bound again, deleted) is not touched: its change comes as the next watch event.
    """
    name, claim = volume.metadata.name, volume.spec.claim_ref
    if volume.status is None or volume.status.phase != "Released" or claim is None:
        return  # not released, or reclaimed already and about to turn Available
    folder = pool_folder(volume, volumes_dir)
    if folder is None:
        log(f"{name}: left Released, its hostPath is not a folder of {volumes_dir}")
        return
    try:
        empty(folder)
    except OSError as error:
        log(f"{name}: left Released, its folder could not be emptied ({error}); trying again later")
        return
    patch = {"metadata": {"resourceVersion": volume.metadata.resource_version}, "spec": {"claimRef": None}}
    try:
        core.patch_persistent_volume(name, patch, _content_type="application/merge-patch+json")
    except ApiException as error:
        if error.status not in (404, 409):
            raise
        log(f"{name}: changed while being reclaimed ({error.status}); its next event decides")
        return
    log(f"{name}: emptied and released from {claim.namespace}/{claim.name}")


def watch_pool(core: client.CoreV1Api, volumes_dir: Path) -> None:
    """Reclaim pool volumes as they are released, forever; a watch that breaks is started again."""
    while True:
        try:
            for event in watch.Watch().stream(
                core.list_persistent_volume, label_selector=f"{POOL_LABEL}=true", timeout_seconds=RESYNC_SECONDS
            ):
                if event["type"] in ("ADDED", "MODIFIED"):
                    reclaim(core, event["object"], volumes_dir)
        except (ApiException, HTTPError) as error:
            log(f"watch of the pool broke ({error}); starting it again in 1 s")
            time.sleep(1)
        except Exception:  # a bug here must not end reclaiming for the rest of the bed's life
            log(f"reclaiming failed; starting the watch again in 1 s\n{traceback.format_exc()}")
            time.sleep(1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aidc_testbed.reclaimer", description=__doc__.split("\n")[0])
    parser.add_argument("--kubeconfig", type=Path, required=True)
    parser.add_argument("--volumes-dir", type=Path, required=True, help="the folder of the pool's host folders")
    args = parser.parse_args(argv)
    api = kube_config.new_client_from_config(config_file=str(args.kubeconfig))
    log("watching the pool's volumes")
    watch_pool(client.CoreV1Api(api), args.volumes_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
