"""Deploy stage: export the final classifier for serving and create/update its one InferenceService.

One InferenceService per deployed model, and this step is what creates it: manifests/base ships only
what it needs (ServingRuntime, service accounts, RBAC, storage config); ``manifests/overlays/example-isvc``
shows the object `inference_service` builds by default, for a hand ``kubectl apply -k``. The model is
served under the InferenceService's name, `SERVED_MODEL_NAME` (``mammosynth``) by default — the name
``mammosynth serve`` uses locally, so requests read the same in both places.

`export_for_serving` writes one tree that serves both runtimes::

    <out>/model.keras, model.json   our predictor (`python -m mammosynth.serving --model_dir /mnt/models`)
    <out>/saved_model/<n>/          TF SavedModel under a numeric version (KServe's TensorFlow runtime)

`inference_service` builds the ``serving.kserve.io/v1beta1`` object, `apply_inference_service` creates
or patches it in-cluster and waits for Ready, and `deploy` does all three, printing the YAML instead of
applying it when not running inside a cluster (no ``KUBERNETES_SERVICE_HOST``).
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mammosynth import atomic, storage
from mammosynth.models.io import META_FILE, MODEL_FILE, SAVED_MODEL_DIR, load_meta
from mammosynth.serving import SERVED_MODEL_NAME

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "serving.kserve.io", "v1beta1", "inferenceservices"
# Names shared with manifests/base (serving-runtime.yaml, service-accounts.yaml).
CUSTOM_MODEL_FORMAT = "mammosynth-keras"
CUSTOM_RUNTIME = "mammosynth-server"
DEFAULT_SERVICE_ACCOUNT = "mammosynth-kserve"
DEFAULT_RESOURCES = {"requests": {"cpu": "1", "memory": "2Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}
RUNTIMES = ("custom", "tensorflow")


def _numeric_version(meta: dict[str, Any]) -> str:
    """TF Serving only loads numeric version folders; a non-numeric model version maps to 1."""
    version = str(meta.get("version", "1"))
    return version if version.isdigit() else "1"


def _build_layout(model_dir: Path, dest: Path) -> dict[str, Any]:
    """Write the serving tree for ``model_dir`` into the empty directory ``dest``."""
    meta = load_meta(model_dir)
    if not (model_dir / MODEL_FILE).exists():
        raise FileNotFoundError(
            f"{model_dir / MODEL_FILE} missing: {model_dir} is not a mammosynth model directory"
        )
    shutil.copy2(model_dir / MODEL_FILE, dest / MODEL_FILE)
    shutil.copy2(model_dir / META_FILE, dest / META_FILE)
    tf_version = _numeric_version(meta)
    saved_root = model_dir / SAVED_MODEL_DIR
    existing = (
        sorted(p for p in saved_root.iterdir() if (p / "saved_model.pb").exists())
        if saved_root.is_dir()
        else []
    )
    target = dest / SAVED_MODEL_DIR / tf_version
    if existing:
        # The export written at training time; pick the folder of this model's version if present.
        chosen = next((p for p in existing if p.name == str(meta.get("version"))), existing[-1])
        shutil.copytree(chosen, target)
    else:
        from mammosynth.models.io import load_classifier

        log.info("deploy: %s has no SavedModel; exporting one for the TensorFlow runtime", model_dir)
        model, _ = load_classifier(model_dir)
        model.export(str(target), format="tf_saved_model", verbose=False)
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    return {
        "model_version": str(meta.get("version", "1")),
        "tf_version": tf_version,
        "image_size": meta.get("image_size"),
        "files": files,
    }


def export_for_serving(model_dir: str | os.PathLike, out_uri: str | os.PathLike) -> dict[str, Any]:
    """Write the serving layouts of a model directory to a local path or an ``s3://`` URI.

    Local targets are replaced atomically (built in a sibling temp dir, then renamed); S3 targets are
    uploaded with `mammosynth.storage.upload_dir` (unchanged files are skipped on a re-run).

    Args:
        model_dir: a model directory (`mammosynth.models.io`), local or ``s3://``.
        out_uri: where to write the serving tree.

    Returns:
        ``{"uri", "predictor_uri", "tensorflow_uri", "model_version", "tf_version", "image_size",
        "files"}``: ``predictor_uri`` is the storageUri for our runtime, ``tensorflow_uri`` for
        KServe's TensorFlow runtime.

    Raises:
        FileNotFoundError: ``model_dir`` is not a model directory.
    """
    local_src = storage.localize(model_dir)  # local paths as they are; s3:// fetched into the cache
    out = str(out_uri).rstrip("/")
    if storage.is_remote(out):
        with tempfile.TemporaryDirectory(prefix="mammosynth-export-") as tmp:
            info = _build_layout(local_src, Path(tmp))
            stats = storage.upload_dir(tmp, out)
        log.info("deploy: uploaded %d of %d files to %s", stats.get("uploaded", 0), len(info["files"]), out)
    else:
        target = storage.localize(out)
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic.replace_dir(target) as tmp:
            info = _build_layout(local_src, tmp)
        log.info("deploy: wrote %d files to %s", len(info["files"]), target)
    return {"uri": out, "predictor_uri": out, "tensorflow_uri": f"{out}/{SAVED_MODEL_DIR}", **info}


def inference_service(
    name: str,
    namespace: str,
    storage_uri: str,
    *,
    runtime: str = "custom",
    image: str | None = None,
    service_account: str | None = DEFAULT_SERVICE_ACCOUNT,
    min_replicas: int = 1,
    max_replicas: int = 2,
    resources: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Build a ``serving.kserve.io/v1beta1`` InferenceService.

    Args:
        name: service name (DNS-1123 label, e.g. ``mammosynth``).
        namespace: target namespace.
        storage_uri: the export root written by `export_for_serving` (its ``uri``).
        runtime: ``"custom"`` (our server, accepts images/DICOMs) or ``"tensorflow"`` (KServe's TF
            runtime on ``<storage_uri>/saved_model``, tensors only).
        image: for ``custom``, run this server image directly as the predictor container (KServe
            still downloads ``storage_uri`` to /mnt/models); ``None`` uses the ``mammosynth-server``
            ServingRuntime from manifests/base.
        service_account: account whose S3 annotations/secret the storage initializer uses.
        min_replicas: fewest predictor replicas (0 lets KServe scale to zero).
        max_replicas: most predictor replicas (at least 1).
        resources: container requests/limits (default 1-2 CPU, 2-4 GiB).

    Raises:
        ValueError: unknown runtime, bad replica bounds, or an invalid name.
    """
    _check_service_args(name, runtime, image, min_replicas, max_replicas)
    storage_uri = storage_uri.rstrip("/")
    res = copy.deepcopy(resources if resources is not None else DEFAULT_RESOURCES)
    predictor: dict[str, Any] = {"minReplicas": min_replicas, "maxReplicas": max_replicas}
    if service_account:
        predictor["serviceAccountName"] = service_account
    predictor.update(_predictor_workload(name, storage_uri, runtime, image, res))
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceService",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {
                "app.kubernetes.io/part-of": "mammosynth",
                "app.kubernetes.io/component": f"predictor-{runtime}",
            },
        },
        "spec": {"predictor": predictor},
    }


def _check_service_args(
    name: str, runtime: str, image: str | None, min_replicas: int, max_replicas: int
) -> None:
    """Check `inference_service`'s arguments before building anything.

    Raises:
        ValueError: an unknown runtime, bad replica bounds, a name that is not a DNS-1123 label, or an
            image given to the tensorflow runtime (one line naming the value and what is allowed).
    """
    if runtime not in RUNTIMES:
        raise ValueError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if not (0 <= min_replicas <= max_replicas) or max_replicas < 1:
        raise ValueError(
            f"replicas must satisfy 0 <= min_replicas <= max_replicas, max >= 1; got "
            f"min={min_replicas}, max={max_replicas}"
        )
    import re

    if not re.fullmatch(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?", name):
        raise ValueError(
            f"InferenceService name {name!r} must be a DNS-1123 label starting with a letter "
            "(lowercase letters, digits, '-')"
        )
    if runtime == "tensorflow" and image is not None:
        raise ValueError("image applies only to runtime='custom'; the tensorflow runtime uses KServe's image")


def _predictor_workload(
    name: str, storage_uri: str, runtime: str, image: str | None, res: dict
) -> dict[str, Any]:
    """The predictor's ``model`` (a KServe runtime) or ``containers`` (our server image run directly)."""
    if runtime == "tensorflow":
        tf_uri = (
            storage_uri if storage_uri.endswith(f"/{SAVED_MODEL_DIR}") else f"{storage_uri}/{SAVED_MODEL_DIR}"
        )
        return {"model": {"modelFormat": {"name": "tensorflow"}, "storageUri": tf_uri, "resources": res}}
    if image is None:
        return {
            "model": {
                "modelFormat": {"name": CUSTOM_MODEL_FORMAT},
                "runtime": CUSTOM_RUNTIME,
                "storageUri": storage_uri,
                "resources": res,
            }
        }
    return {
        "containers": [
            {
                "name": "kserve-container",
                "image": image,
                "args": [f"--model_name={name}", "--model_dir=/mnt/models", "--http_port=8080"],
                # KServe's storage initializer downloads STORAGE_URI into /mnt/models for custom containers.
                "env": [
                    {"name": "STORAGE_URI", "value": storage_uri},
                    {"name": "TF_CPP_MIN_LOG_LEVEL", "value": "2"},
                ],
                "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                "resources": res,
            }
        ]
    }


def served_model_name(obj: dict[str, Any]) -> str:
    """The model name KServe serves an InferenceService's model under (the ``/v1/models/<name>`` path).

    Our ServingRuntime passes ``--model_name={{.Name}}`` and KServe's TensorFlow runtime does the same, so
    it is the InferenceService's name; a predictor container says it in its own ``--model_name`` arg.

    Args:
        obj: an InferenceService from `inference_service`.

    Returns:
        The served model name.
    """
    for container in obj["spec"]["predictor"].get("containers") or []:
        for arg in container.get("args") or []:
            if arg.startswith("--model_name="):
                return arg.split("=", 1)[1]
    return obj["metadata"]["name"]


def _ready_condition(obj: dict[str, Any]) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Ready":
            return cond
    return None


def apply_inference_service(
    obj: dict[str, Any], timeout_s: float = 600, *, api: Any = None, poll_s: float = 5.0
) -> dict[str, Any]:
    """Create the InferenceService, or merge-patch it if it exists, and wait until it is Ready.

    Args:
        obj: an object from `inference_service`.
        timeout_s: how long to wait for the Ready condition.
        api: a ``kubernetes.client.CustomObjectsApi`` (default: one from the in-cluster config,
            falling back to ~/.kube/config).
        poll_s: seconds between status reads.

    Returns:
        ``{"name", "namespace", "action": "created"|"patched", "url", "ready": True}``.

    Raises:
        TimeoutError: not Ready within ``timeout_s``; the message carries the last condition.
    """
    from kubernetes.client.exceptions import ApiException

    if api is None:
        from kubernetes import client, config

        try:
            config.load_incluster_config()
        except config.ConfigException:
            config.load_kube_config()
        api = client.CustomObjectsApi()
    name, namespace = obj["metadata"]["name"], obj["metadata"]["namespace"]
    try:
        api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        exists = True
    except ApiException as exc:
        if exc.status != 404:
            raise
        exists = False
    if exists:
        api.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, obj)
        action = "patched"
    else:
        api.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, obj)
        action = "created"
    log.info(
        "deploy: %s InferenceService %s/%s; waiting up to %.0f s for Ready",
        action,
        namespace,
        name,
        timeout_s,
    )
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] | None = None
    while True:
        current = api.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        last = _ready_condition(current)
        if last is not None and str(last.get("status")) == "True":
            url = (current.get("status") or {}).get("url")
            log.info("deploy: %s/%s is Ready at %s", namespace, name, url)
            return {"name": name, "namespace": namespace, "action": action, "url": url, "ready": True}
        if time.monotonic() >= deadline:
            detail = (
                (
                    f"last Ready condition: status={last.get('status')}, reason={last.get('reason')}, "
                    f"message={last.get('message')}"
                )
                if last
                else "no Ready condition reported yet"
            )
            raise TimeoutError(
                f"InferenceService {namespace}/{name} not Ready after {timeout_s:.0f} s ({detail}); "
                f"inspect it with: kubectl -n {namespace} describe inferenceservice {name}"
            )
        time.sleep(poll_s)


def to_yaml(obj: dict[str, Any]) -> str:
    """Render a manifest as YAML (keys in insertion order)."""
    import yaml

    return yaml.safe_dump(obj, sort_keys=False)


@dataclass
class DeployResult:
    """What `deploy` did; ``str()`` gives a one-line summary (the pipeline step's output)."""

    applied: bool
    storage_uri: str
    inference_service: dict[str, Any]
    export: dict[str, Any] | None = None
    status: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def __str__(self) -> str:
        name = self.inference_service["metadata"]["name"]
        if self.applied:
            return (
                f"InferenceService {name} {self.status.get('action')} and Ready at {self.status.get('url')}"
            )
        return f"InferenceService {name} not applied: {self.note}"


def in_cluster() -> bool:
    """Whether this process runs inside a Kubernetes pod (``KUBERNETES_SERVICE_HOST`` is set)."""
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))


def deploy(
    model_dir: str | os.PathLike,
    *,
    model_uri: str = "",
    name: str = SERVED_MODEL_NAME,
    namespace: str = "mammosynth",
    runtime: str = "custom",
    image: str | None = None,
    service_account: str | None = DEFAULT_SERVICE_ACCOUNT,
    min_replicas: int = 1,
    max_replicas: int = 2,
    resources: dict[str, Any] | None = None,
    timeout_s: float = 600,
    api: Any = None,
    stream=None,
) -> DeployResult:
    """Export ``model_dir`` to ``model_uri`` and apply its one InferenceService (in a cluster only).

    The InferenceService is named ``name``, which is also the served model name (`served_model_name`);
    the default, `SERVED_MODEL_NAME`, is the name ``mammosynth serve`` uses locally.

    Outside a cluster (no ``KUBERNETES_SERVICE_HOST``) the YAML that would be applied is printed and
    nothing is applied. An empty ``model_uri`` skips the export (and therefore the apply: the cluster
    cannot read a local path).

    Returns:
        A `DeployResult`.

    Raises:
        ValueError: the InferenceService fails the CRD schema (unknown or misspelt fields included).
        TimeoutError: applied but not Ready within ``timeout_s``.
    """
    from mammosynth.cluster import k8s

    stream = stream or sys.stdout
    exported = export_for_serving(model_dir, model_uri) if model_uri else None
    storage_uri = exported["uri"] if exported else str(model_dir)
    obj = inference_service(
        name,
        namespace,
        storage_uri,
        runtime=runtime,
        image=image,
        service_account=service_account,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        resources=resources,
    )
    k8s.validate_inference_service(obj)
    served = served_model_name(obj)
    if served != SERVED_MODEL_NAME:
        log.warning(
            "deploy: the model is served as %r, not %r as `mammosynth serve` serves it locally; "
            "run the local server with --model_name %s to send it the same requests",
            served,
            SERVED_MODEL_NAME,
            served,
        )
    if not model_uri:
        note = "no model_uri given, so nothing was exported for the cluster to read"
    elif not in_cluster() and api is None:
        note = "not running in a cluster (KUBERNETES_SERVICE_HOST unset); YAML printed instead"
    else:
        status = apply_inference_service(obj, timeout_s, api=api)
        return DeployResult(True, storage_uri, obj, exported, status)
    print(f"# {note}\n{to_yaml(obj)}", file=stream, end="")
    return DeployResult(False, storage_uri, obj, exported, note=note)


def main(argv: list[str] | None = None) -> int:
    """Run the command line (``python -m mammosynth.cluster.deploy``).

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit status.
    """
    parser = argparse.ArgumentParser(
        prog="mammosynth deploy",
        description="Export a classifier for serving and create/update its KServe InferenceService "
        "(prints the YAML instead when not in a cluster).",
    )
    parser.add_argument("--model", required=True, help="model directory (local or s3://)")
    parser.add_argument(
        "--model-uri", default="", help="where to export the serving tree (s3://... in a cluster)"
    )
    parser.add_argument(
        "--name", default=SERVED_MODEL_NAME, help="InferenceService name, also the served model name"
    )
    parser.add_argument("--namespace", default="mammosynth")
    parser.add_argument("--runtime", choices=RUNTIMES, default="custom")
    parser.add_argument("--image", default=None, help="server image to run directly (custom runtime)")
    parser.add_argument("--service-account", default=DEFAULT_SERVICE_ACCOUNT)
    parser.add_argument("--min-replicas", type=int, default=1)
    parser.add_argument("--max-replicas", type=int, default=2)
    parser.add_argument("--timeout-s", type=float, default=600, help="how long to wait for Ready")
    args = parser.parse_args(argv)
    try:
        result = deploy(
            args.model,
            model_uri=args.model_uri,
            name=args.name,
            namespace=args.namespace,
            runtime=args.runtime,
            image=args.image,
            service_account=args.service_account,
            min_replicas=args.min_replicas,
            max_replicas=args.max_replicas,
            timeout_s=args.timeout_s,
        )
    except (ValueError, FileNotFoundError, TimeoutError) as exc:
        print(f"mammosynth deploy: {exc}", file=sys.stderr)
        return 1
    print(result, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
