"""Deploy stage: serving export layouts, InferenceService objects against the KServe CRD, apply/wait."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mammosynth.cluster import deploy as dep  # noqa: E402
from mammosynth.cluster import k8s  # noqa: E402

S = 16


def _tiny_model():
    import keras

    keras.utils.set_random_seed(1)
    return keras.Sequential(
        [
            keras.Input((S, S, 1)),
            keras.layers.Conv2D(2, 3, activation="relu"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    from mammosynth.models.io import save_classifier

    root = tmp_path_factory.mktemp("deploy")
    model = _tiny_model()
    with_sm = save_classifier(model, root / "with-savedmodel", {"image_size": S, "version": "2"})
    # A run-named version and no SavedModel: the export must create a numeric version folder.
    without = save_classifier(
        model, root / "no-savedmodel", {"image_size": S, "version": "real-seed0"}, export_saved_model=False
    )
    return model, with_sm, without


def _serving_default(path):
    import tensorflow as tf

    fn = tf.saved_model.load(str(path)).signatures["serving_default"]
    return lambda x: next(iter(fn(tf.constant(x)).values())).numpy()[:, 0]


def test_export_writes_both_layouts_that_agree(model_dirs, tmp_path):
    model, with_sm, without = model_dirs
    x = np.random.default_rng(0).random((3, S, S, 1), dtype=np.float32)
    want = np.asarray(model(x))[:, 0]
    for src, tf_version in ((with_sm, "2"), (without, "1")):
        out = tmp_path / f"export-{src.name}"
        info = dep.export_for_serving(src, out)
        assert info["tf_version"] == tf_version and info["predictor_uri"] == str(out)
        assert info["tensorflow_uri"] == f"{out}/saved_model"
        assert {"model.keras", "model.json", f"saved_model/{tf_version}/saved_model.pb"} <= set(info["files"])
        assert [p.name for p in (out / "saved_model").iterdir()] == [tf_version]
        np.testing.assert_allclose(_serving_default(out / "saved_model" / tf_version)(x), want, atol=1e-5)
        from mammosynth.models.io import load_classifier

        served, meta = load_classifier(out)
        np.testing.assert_allclose(np.asarray(served(x))[:, 0], want, atol=1e-6)
        assert meta["image_size"] == S
    # Re-exporting replaces the tree rather than mixing versions.
    dep.export_for_serving(with_sm, tmp_path / "export-no-savedmodel")
    assert [p.name for p in (tmp_path / "export-no-savedmodel" / "saved_model").iterdir()] == ["2"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left behind


def test_export_refuses_a_non_model_dir(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a mammosynth model directory"):
        dep.export_for_serving(tmp_path / "empty", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"runtime": "custom"},
        {"runtime": "custom", "image": "registry.example/mammosynth-server:1.0", "service_account": None},
        {
            "runtime": "tensorflow",
            "min_replicas": 0,
            "max_replicas": 3,
            "resources": {"limits": {"nvidia.com/gpu": "1"}},
        },
    ],
)
def test_inference_services_validate_against_the_crd(kwargs):
    obj = dep.inference_service("mammosynth", "mammosynth", "s3://mammosynth/models/classifier", **kwargs)
    k8s.validate_inference_service(obj)  # strict: CRD openAPIV3Schema + additionalProperties: false
    predictor = obj["spec"]["predictor"]
    if kwargs["runtime"] == "tensorflow":
        assert predictor["model"]["storageUri"] == "s3://mammosynth/models/classifier/saved_model"
        assert predictor["model"]["modelFormat"] == {"name": "tensorflow"}
    elif "image" in kwargs:
        container = predictor["containers"][0]
        assert {"name": "STORAGE_URI", "value": "s3://mammosynth/models/classifier"} in container["env"]
        assert "--model_dir=/mnt/models" in container["args"] and "serviceAccountName" not in predictor
    else:
        assert predictor["model"]["runtime"] == dep.CUSTOM_RUNTIME
        assert predictor["serviceAccountName"] == dep.DEFAULT_SERVICE_ACCOUNT


def test_crd_validation_catches_misspelt_and_mistyped_fields():
    obj = dep.inference_service("mammosynth", "mammosynth", "s3://b/m")
    bad = json.loads(json.dumps(obj))
    bad["spec"]["predictor"]["minReplica"] = 1
    with pytest.raises(ValueError, match="minReplica"):
        k8s.validate_inference_service(bad)
    bad = json.loads(json.dumps(obj))
    bad["spec"]["predictor"]["maxReplicas"] = "two"
    with pytest.raises(ValueError, match="maxReplicas"):
        k8s.validate_inference_service(bad)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"runtime": "triton"}, "unknown runtime"),
        ({"min_replicas": 3, "max_replicas": 2}, "replicas"),
        ({"runtime": "tensorflow", "image": "x"}, "image applies only"),
    ],
)
def test_inference_service_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        dep.inference_service("mammosynth", "ns", "s3://b/m", **kwargs)
    with pytest.raises(ValueError, match="DNS-1123"):
        dep.inference_service("Mammo_Synth", "ns", "s3://b/m")


class FakeCustomObjects:
    """Stands in for kubernetes.client.CustomObjectsApi: stores one object, turns Ready after N reads."""

    def __init__(self, existing=None, ready_after=2):
        self.objects = {} if existing is None else {existing["metadata"]["name"]: existing}
        self.calls: list[str] = []
        self.ready_after = ready_after
        self.reads = 0

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        from kubernetes.client.exceptions import ApiException

        self.calls.append("get")
        assert (group, version, plural) == ("serving.kserve.io", "v1beta1", "inferenceservices")
        if name not in self.objects:
            raise ApiException(status=404, reason="Not Found")
        self.reads += 1
        obj = json.loads(json.dumps(self.objects[name]))
        ready = self.ready_after is not None and self.reads > self.ready_after
        obj["status"] = {
            "url": f"http://{name}.{namespace}.example.com",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True" if ready else "False",
                    "reason": None if ready else "RevisionMissing",
                    "message": None if ready else "storage-initializer pending",
                }
            ],
        }
        return obj

    def create_namespaced_custom_object(self, group, version, namespace, plural, body):
        self.calls.append("create")
        self.objects[body["metadata"]["name"]] = body

    def patch_namespaced_custom_object(self, group, version, namespace, plural, name, body):
        self.calls.append("patch")
        self.objects[name] = body


def test_apply_creates_then_patches_and_waits_for_ready():
    obj = dep.inference_service("mammosynth", "mammosynth", "s3://b/m")
    api = FakeCustomObjects(ready_after=2)
    status = dep.apply_inference_service(obj, timeout_s=5, api=api, poll_s=0.01)
    assert status == {
        "name": "mammosynth",
        "namespace": "mammosynth",
        "action": "created",
        "url": "http://mammosynth.mammosynth.example.com",
        "ready": True,
    }
    assert api.calls[:2] == ["get", "create"] and api.reads == 3
    api2 = FakeCustomObjects(existing=obj, ready_after=0)
    assert dep.apply_inference_service(obj, timeout_s=5, api=api2, poll_s=0.01)["action"] == "patched"
    assert api2.calls[:3] == ["get", "patch", "get"]


def test_apply_times_out_with_the_last_condition():
    obj = dep.inference_service("mammosynth", "mammosynth", "s3://b/m")
    with pytest.raises(TimeoutError, match="storage-initializer pending"):
        dep.apply_inference_service(obj, timeout_s=0.05, api=FakeCustomObjects(ready_after=None), poll_s=0.01)


def test_deploy_outside_a_cluster_prints_yaml_and_skips(model_dirs, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    _, with_sm, _ = model_dirs
    out = io.StringIO()
    result = dep.deploy(with_sm, model_uri=str(tmp_path / "served"), name="mammo-test", stream=out)
    assert not result.applied and "not running in a cluster" in str(result)
    printed = yaml.safe_load(out.getvalue())
    assert printed == result.inference_service
    assert printed["spec"]["predictor"]["model"]["storageUri"] == str(tmp_path / "served")
    assert (tmp_path / "served" / "saved_model" / "2" / "saved_model.pb").exists()
    # No model_uri: nothing exported, nothing applied, even "in" a cluster.
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    skipped = dep.deploy(with_sm, stream=io.StringIO())
    assert not skipped.applied and skipped.export is None and "no model_uri" in skipped.note


def test_deploy_in_cluster_applies(model_dirs, tmp_path, monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    _, with_sm, _ = model_dirs
    api = FakeCustomObjects(ready_after=0)
    result = dep.deploy(with_sm, model_uri=str(tmp_path / "served"), runtime="tensorflow", api=api)
    assert result.applied and api.calls[:2] == ["get", "create"]
    assert "Ready at http://mammosynth.mammosynth.example.com" in str(result)
    assert api.objects["mammosynth"]["spec"]["predictor"]["model"]["storageUri"].endswith(
        "/served/saved_model"
    )


def test_main_help_and_dry_run(model_dirs, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(SystemExit) as exc:
        dep.main(["--help"])
    assert exc.value.code == 0 and "mammosynth deploy" in capsys.readouterr().out
    _, with_sm, _ = model_dirs
    assert dep.main(["--model", str(with_sm), "--model-uri", str(tmp_path / "m"), "--name", "m1"]) == 0
    assert "kind: InferenceService" in capsys.readouterr().out
    assert dep.main(["--model", str(tmp_path / "missing"), "--model-uri", str(tmp_path / "m2")]) == 1


def test_deploy_creates_one_inference_service_served_under_the_local_name(
    model_dirs, tmp_path, monkeypatch, caplog
):
    """One InferenceService per deployed model, created by the deploy step, and the model name a client
    puts in /v1/models/<name>:predict is the one `mammosynth serve` answers to locally."""
    pytest.importorskip("kserve", reason="the local server's default name lives in mammosynth.serving.model")
    from mammosynth import study
    from mammosynth.serving import SERVED_MODEL_NAME
    from mammosynth.serving.__main__ import build_parser
    from mammosynth.serving.model import DEFAULT_NAME

    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    _, with_sm, _ = model_dirs
    fake = api = FakeCustomObjects(ready_after=0)
    real_apply = dep.apply_inference_service

    def apply(obj, timeout_s, api=None):
        return real_apply(obj, 5, api=fake, poll_s=0.01)

    monkeypatch.setattr(dep, "apply_inference_service", apply)
    out = study.deploy_step(str(with_sm), model_uri=str(tmp_path / "served"))  # the pipeline step's defaults
    assert list(api.objects) == [SERVED_MODEL_NAME] and api.calls.count("create") == 1
    assert out.startswith("InferenceService mammosynth created and Ready")
    (isvc,) = api.objects.values()
    local = build_parser().parse_args(["--model", str(with_sm)]).model_name
    assert dep.served_model_name(isvc) == local == DEFAULT_NAME == SERVED_MODEL_NAME
    # A server image run directly says the name in its own arg; a renamed service warns that it differs.
    direct = dep.inference_service("mammo-b", "ns", "s3://b/m", image="registry.example/server:1")
    assert dep.served_model_name(direct) == "mammo-b"
    with caplog.at_level("WARNING", logger="mammosynth.cluster.deploy"):
        dep.deploy(with_sm, model_uri=str(tmp_path / "b"), name="mammo-b", stream=io.StringIO())
    assert "served as 'mammo-b', not 'mammosynth'" in caplog.text and "--model_name mammo-b" in caplog.text
