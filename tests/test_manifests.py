"""Manifests tier: every kustomize overlay renders offline and every object validates against its
schema (core kinds via the kubernetes client's models, KServe/Katib via their CRD/OpenAPI schemas with
unknown fields rejected); names agree across objects and with the pipeline; no credential is tracked;
the cluster entry points (`mammosynth.cluster.submit`, mk/cluster.mk) check their inputs."""

from __future__ import annotations

import copy
import os
import re
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mammosynth.cluster import k8s, submit

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = ROOT / "manifests"
OVERLAYS = ("local", "gpu", "local-gpu")
EXAMPLE_ISVC = "example-isvc"  # an example overlay, not applied by `make deploy`
# The accounts pipeline runs use by default: standalone KFP's and a Kubeflow profile namespace's. They
# are created by KFP / the profile controller, never by these manifests.
DEFAULT_RUNNERS = ("pipeline-runner", "default-editor")
KUBECTL = shutil.which("kubectl")
CREDENTIAL_SECRET = "mammosynth-minio"
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl is not installed: cannot render kustomize"
)


def _kustomize(path: Path) -> list[dict]:
    proc = subprocess.run([KUBECTL, "kustomize", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    if KUBECTL is None:
        pytest.skip("kubectl is not installed: cannot render kustomize")
    out = {overlay: _kustomize(MANIFESTS / "overlays" / overlay) for overlay in (*OVERLAYS, EXAMPLE_ISVC)}
    out["base"] = _kustomize(MANIFESTS / "base")
    return out


def _find(docs: list[dict], kind: str, name: str) -> dict:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert matches, f"no {kind}/{name} in the rendered output"
    return matches[0]


# ---- rendering and schema validation -------------------------------------------------------------


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_objects_validate(rendered, overlay):
    docs = rendered[overlay]
    for doc in docs:
        k8s.validate_object(doc)  # raises with every problem listed
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "mammosynth", (
                f"{doc['kind']}/{doc['metadata']['name']}"
            )
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    expected = {
        ("Namespace", "mammosynth"),
        ("ServiceAccount", "mammosynth-pipeline-runner"),
        ("ServiceAccount", "mammosynth-kserve"),
        ("Role", "mammosynth-pipeline-runner"),
        ("RoleBinding", "mammosynth-pipeline-runner"),
        ("ConfigMap", "mammosynth-storage"),
        ("Job", "mammosynth-bucket-setup"),
        ("ServingRuntime", "mammosynth-server"),
    }
    minio = {("Deployment", "minio"), ("Service", "minio"), ("PersistentVolumeClaim", "minio-data")}
    gpu = {("ConfigMap", "mammosynth-gpu-pool")}
    expected |= {"local": minio, "gpu": gpu, "local-gpu": minio | gpu}[overlay]
    if overlay == "gpu":
        assert not minio & kinds, "the gpu overlay uses an existing object store"
    assert expected <= kinds, f"missing from {overlay}: {sorted(expected - kinds)}"
    # The deploy step creates the one InferenceService once a model exists; no overlay applies one.
    assert not [d for d in docs if d["kind"] == "InferenceService"]
    # The credentials never come from the overlays (see manifests/credentials).
    assert not [d for d in docs if d["kind"] == "Secret"]


@needs_kubectl
def test_namespace_enables_katib_metrics_collector(rendered):
    for docs in rendered.values():
        labels = _find(docs, "Namespace", "mammosynth")["metadata"]["labels"]
        assert labels["katib.kubeflow.org/metrics-collector-injection"] == "enabled"


@needs_kubectl
@pytest.mark.parametrize("overlay", (*OVERLAYS, EXAMPLE_ISVC))
def test_references_resolve(rendered, overlay):
    """Every ConfigMap/Secret/ServiceAccount/runtime/Role an object names exists (or is the
    credentials Secret that manifests/credentials creates)."""
    docs = rendered[overlay]
    names = {(d["kind"], d["metadata"]["name"]) for d in docs}
    refs: list[tuple[str, str, str]] = []

    def walk(node, owner):
        if isinstance(node, dict):
            for key, kind in (
                ("configMapRef", "ConfigMap"),
                ("configMapKeyRef", "ConfigMap"),
                ("secretRef", "Secret"),
                ("secretKeyRef", "Secret"),
            ):
                if isinstance(node.get(key), dict):
                    refs.append((kind, node[key]["name"], owner))
            if isinstance(node.get("persistentVolumeClaim"), dict):
                refs.append(("PersistentVolumeClaim", node["persistentVolumeClaim"]["claimName"], owner))
            if "serviceAccountName" in node:
                refs.append(("ServiceAccount", node["serviceAccountName"], owner))
            for value in node.values():
                walk(value, owner)
        elif isinstance(node, list):
            for value in node:
                walk(value, owner)

    for doc in docs:
        walk(doc.get("spec", {}), f"{doc['kind']}/{doc['metadata']['name']}")
        for secret in doc.get("secrets", []) if doc["kind"] == "ServiceAccount" else []:
            refs.append(("Secret", secret["name"], f"ServiceAccount/{doc['metadata']['name']}"))
        if doc["kind"] == "RoleBinding":
            refs.append((doc["roleRef"]["kind"], doc["roleRef"]["name"], "RoleBinding"))
            refs += [("ServiceAccount", s["name"], "RoleBinding") for s in doc["subjects"]]
        if doc["kind"] == "InferenceService" and doc["spec"]["predictor"]["model"].get("runtime"):
            refs.append(
                ("ServingRuntime", doc["spec"]["predictor"]["model"]["runtime"], doc["metadata"]["name"])
            )
    assert refs
    external = {("Secret", CREDENTIAL_SECRET), *(("ServiceAccount", sa) for sa in DEFAULT_RUNNERS)}
    missing = [r for r in refs if (r[0], r[1]) not in names and (r[0], r[1]) not in external]
    assert not missing, f"dangling references in {overlay}: {missing}"


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_s3_endpoint_agrees_between_pipeline_config_and_kserve(rendered, overlay):
    docs = rendered[overlay]
    data = _find(docs, "ConfigMap", "mammosynth-storage")["data"]
    annotations = _find(docs, "ServiceAccount", "mammosynth-kserve")["metadata"]["annotations"]
    assert annotations["serving.kserve.io/s3-endpoint"] == data["S3_ENDPOINT"]
    assert annotations["serving.kserve.io/s3-usehttps"] == data["S3_USE_HTTPS"]
    assert annotations["serving.kserve.io/s3-region"] == data["AWS_REGION"]
    if overlay.startswith("local"):
        service = _find(docs, "Service", "minio")
        host, port = data["S3_ENDPOINT"].rsplit(":", 1)
        labels = host.split(".")
        assert labels[0] == service["metadata"]["name"]
        assert labels[1:2] in ([], [service["metadata"]["namespace"]])
        assert int(port) in {p["port"] for p in service["spec"]["ports"]}


@needs_kubectl
def test_one_inference_service_only_in_the_example_overlay(rendered):
    """Base ships ServingRuntime, SA, RBAC and storage, no InferenceService; the example overlay holds exactly
    one, the very object the deploy step builds, served under the name `mammosynth serve` uses locally."""
    from mammosynth.cluster import deploy
    from mammosynth.serving import SERVED_MODEL_NAME

    assert not [d for d in rendered["base"] if d["kind"] == "InferenceService"]
    kinds = {d["kind"] for d in rendered["base"]}
    assert kinds >= {"ServingRuntime", "ServiceAccount", "Role", "RoleBinding"}
    example = rendered[EXAMPLE_ISVC]
    (isvc,) = [d for d in example if d["kind"] == "InferenceService"]
    k8s.validate_inference_service(isvc)
    built = deploy.inference_service(SERVED_MODEL_NAME, "mammosynth", "s3://mammosynth/models/classifier")
    assert isvc == built
    assert deploy.served_model_name(isvc) == SERVED_MODEL_NAME == "mammosynth"
    # Everything else in the example is the base, unchanged.
    others = sorted(yaml.safe_dump(d) for d in example if d["kind"] != "InferenceService")
    assert others == sorted(yaml.safe_dump(d) for d in rendered["base"])
    # `make deploy` takes OVERLAY=local|gpu|local-gpu and render lists the same: the example is never applied.
    cluster_mk = (ROOT / "mk" / "cluster.mk").read_text()
    assert EXAMPLE_ISVC not in cluster_mk


@needs_kubectl
@pytest.mark.parametrize("overlay", (*OVERLAYS, "base"))
def test_rbac_covers_the_default_runner_accounts(rendered, overlay):
    """Runs from the KFP UI use pipeline-runner (standalone KFP) or default-editor (profile namespace), not
    the account `make submit` passes; all three may create Katib Experiments and InferenceServices."""
    docs = rendered[overlay]
    binding = _find(docs, "RoleBinding", "mammosynth-pipeline-runner")
    subjects = {(s["kind"], s["name"]): s for s in binding["subjects"]}
    for name in ("mammosynth-pipeline-runner", *DEFAULT_RUNNERS):
        assert ("ServiceAccount", name) in subjects, name
        namespace = subjects["ServiceAccount", name]["namespace"]
        assert namespace == binding["metadata"]["namespace"] == "mammosynth", name
    role = _find(docs, binding["roleRef"]["kind"], binding["roleRef"]["name"])
    needed = {"create", "get", "list", "watch", "patch", "delete"}
    for group, resource in (("kubeflow.org", "experiments"), ("serving.kserve.io", "inferenceservices")):
        verbs = {
            v
            for rule in role["rules"]
            if group in rule["apiGroups"] and resource in rule["resources"]
            for v in rule["verbs"]
        }
        assert needed <= verbs, f"{group}/{resource}: missing {sorted(needed - verbs)}"


def test_gpu_pool_keys_are_what_the_pipeline_reads():
    """make compile-gpu exports the ConfigMap's keys; the pipeline must read each one."""
    study = ROOT / "pipelines" / "study.py"
    if not study.exists():
        pytest.skip("pipelines/study.py is not written yet")
    text = study.read_text(encoding="utf-8")
    keys = submit.gpu_env(MANIFESTS / "components" / "gpu" / "gpu-pool.yaml")
    assert keys
    for key in keys:
        assert f'"{key}"' in text, f"pipelines/study.py does not read {key}"
    # The Secret and ConfigMap names the pipeline attaches are the ones the manifests create.
    assert f'"{CREDENTIAL_SECRET}"' in text and '"mammosynth-storage"' in text


@needs_kubectl
def test_credentials_secret_generated_from_untracked_env(tmp_path):
    src = MANIFESTS / "credentials"
    assert (src / "minio.env.example").is_file()
    ignored = subprocess.run(["git", "check-ignore", "-q", str(src / "minio.env")], cwd=ROOT)
    assert ignored.returncode == 0, "manifests/credentials/minio.env must be git-ignored"
    work = tmp_path / "credentials"
    shutil.copytree(src, work, ignore=shutil.ignore_patterns("minio.env"))
    keys = [
        line.split("=")[0]
        for line in (src / "minio.env.example").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    values = {key: secrets.token_hex(16) for key in keys}
    (work / "minio.env").write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    (secret,) = _kustomize(work)
    k8s.validate_core(secret)
    assert secret["metadata"] == {**secret["metadata"], "name": CREDENTIAL_SECRET, "namespace": "mammosynth"}
    assert set(secret["data"]) == {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    # Without the env file there is nothing to render: no default credential can slip through.
    (work / "minio.env").unlink()
    proc = subprocess.run([KUBECTL, "kustomize", str(work)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0


# ---- validators: negative cases -------------------------------------------------------------------


@needs_kubectl
def test_misspelt_inference_service_field_is_rejected(rendered):
    isvc = copy.deepcopy(_find(rendered[EXAMPLE_ISVC], "InferenceService", "mammosynth"))
    predictor = isvc["spec"]["predictor"]
    predictor["maxReplica"] = predictor.pop("maxReplicas")
    predictor["model"]["storageURI"] = predictor["model"].pop("storageUri")
    predictor["minReplicas"] = "one"
    with pytest.raises(ValueError) as info:
        k8s.validate_inference_service(isvc)
    message = str(info.value)
    assert "spec.predictor: unknown field(s) 'maxReplica'" in message
    assert "spec.predictor.model: unknown field(s) 'storageURI'" in message
    assert "spec.predictor.minReplicas" in message and "'one'" in message
    assert "3 problem(s)" in message


def test_inference_service_metadata_and_kind_are_checked():
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": "x", "lables": {}},
        "spec": {"predictor": {"model": {"modelFormat": {"name": "tensorflow"}, "storageUri": "s3://b/m"}}},
    }
    with pytest.raises(ValueError, match=r"metadata\.lables: unknown field"):
        k8s.validate_inference_service(isvc)
    with pytest.raises(ValueError, match="apiVersion: expected serving.kserve.io"):
        k8s.validate_inference_service({**isvc, "apiVersion": "serving.kubeflow.org/v1alpha2"})


def test_core_validation_rejects_unknown_and_missing_fields():
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "j"},
        "spec": {
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "c", "image": "busybox", "comand": ["true"]}],
                }
            }
        },
    }
    with pytest.raises(
        ValueError,
        match=r"spec\.template\.spec\.containers\[0\]\.comand: unknown field 'comand' in V1Container",
    ):
        k8s.validate_core(job)
    del job["spec"]["template"]["spec"]["containers"][0]["comand"]
    k8s.validate_core(job)
    del job["spec"]["template"]["spec"]["containers"][0]["name"]
    with pytest.raises(ValueError, match="`name`, must not be `None`"):
        k8s.validate_core(job)
    with pytest.raises(ValueError, match="no kubernetes client model"):
        k8s.validate_core({"apiVersion": "v1", "kind": "Nonsense", "metadata": {"name": "n"}})
    # Unquoted numbers: the API server refuses them in string fields but parses quantities.
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "c"},
        "data": {"S3_USE_HTTPS": 0},
    }
    with pytest.raises(ValueError, match=r"data\.S3_USE_HTTPS: expected str, got int 0"):
        k8s.validate_core(config_map)
    job["spec"]["template"]["spec"]["containers"][0].update(
        name="c", resources={"limits": {"nvidia.com/gpu": 1, "memory": "4Gi"}, "requests": {"cpu": 0.5}}
    )
    k8s.validate_core(job)
    job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = ["2"]
    with pytest.raises(ValueError, match=r"resources\.limits\.cpu: expected a quantity"):
        k8s.validate_core(job)
    with pytest.raises(ValueError, match=r"data\.n: expected str, got dict"):
        k8s.validate_core(
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"n": {}}}
        )


def _experiment() -> dict:
    return {
        "apiVersion": "kubeflow.org/v1beta1",
        "kind": "Experiment",
        "metadata": {"name": "mammosynth-tune", "namespace": "mammosynth"},
        "spec": {
            "objective": {"type": "maximize", "objectiveMetricName": "val_auc", "goal": 0.99},
            "algorithm": {"algorithmName": "tpe"},
            "maxTrialCount": 4,
            "parallelTrialCount": 2,
            "maxFailedTrialCount": 1,
            "metricsCollectorSpec": {"collector": {"kind": "StdOut"}},
            "parameters": [
                {
                    "name": "learning-rate",
                    "parameterType": "double",
                    "feasibleSpace": {"min": "0.0001", "max": "0.01"},
                }
            ],
            "trialTemplate": {
                "primaryContainerName": "training",
                "trialParameters": [{"name": "learningRate", "reference": "learning-rate"}],
                "trialSpec": {
                    "apiVersion": "batch/v1",
                    "kind": "Job",
                    "spec": {
                        "template": {
                            "spec": {
                                "restartPolicy": "Never",
                                "containers": [
                                    {
                                        "name": "training",
                                        "image": "mammosynth-trainer",
                                        "command": [
                                            "python",
                                            "-m",
                                            "mammosynth.train",
                                            "--learning-rate=${trialParameters.learningRate}",
                                        ],
                                    }
                                ],
                            }
                        }
                    },
                },
            },
        },
    }


def test_katib_experiment_validates_against_experiment_spec():
    k8s.validate_katib_experiment(_experiment())
    bad = _experiment()
    bad["spec"]["maxTrialCounts"] = bad["spec"].pop("maxTrialCount")
    bad["spec"]["objective"]["goal"] = "high"
    bad["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0][
        "imagePullPolicyy"
    ] = "Always"
    with pytest.raises(ValueError) as info:
        k8s.validate_katib_experiment(bad)
    message = str(info.value)
    assert "spec: unknown field(s) 'maxTrialCounts'" in message
    assert "spec.objective.goal: 'high' is not of type 'number'" in message
    assert "spec.trialTemplate.trialSpec.spec.template.spec.containers[0].imagePullPolicyy" in message


def test_strict_closes_declared_objects_only():
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "object", "properties": {"b": {"type": "string"}}},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "raw": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "properties": {"c": {"type": "object", "properties": {"d": {}}}},
            },
            "items": {"type": "array", "items": {"type": "object", "properties": {"e": {}}}},
        },
    }
    out = k8s.strict(schema)
    assert out["additionalProperties"] is False
    assert out["properties"]["a"]["additionalProperties"] is False
    assert out["properties"]["labels"]["additionalProperties"] == {"type": "string"}
    assert "additionalProperties" not in out["properties"]["raw"]["properties"]["c"]
    assert out["properties"]["items"]["items"]["additionalProperties"] is False
    assert "additionalProperties" not in schema  # the input is left alone


def test_crd_dir_lookup(monkeypatch, tmp_path):
    import mammosynth

    monkeypatch.delenv(k8s.CRDS_ENV, raising=False)
    assert k8s.crd_dir() == Path(mammosynth.__file__).parent / "cluster" / "schemas"  # the package copy
    assert (k8s.crd_dir() / k8s.INFERENCE_SERVICE_CRD).is_file()
    override = tmp_path / "crds"
    override.mkdir()
    monkeypatch.setenv(k8s.CRDS_ENV, str(override))
    assert k8s.crd_dir() == override
    monkeypatch.setenv(k8s.CRDS_ENV, str(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match=k8s.CRDS_ENV):
        k8s.crd_dir()
    with pytest.raises(ValueError, match="serves: v1beta1"):
        k8s.load_crd_schema(
            ROOT / "src" / "mammosynth" / "cluster" / "schemas" / k8s.INFERENCE_SERVICE_CRD, "v1alpha9"
        )


# ---- no credential in the repository or the rendered output ---------------------------------------

_LITERALS = [
    re.compile(r"AKIA[0-9A-Z]{16}"),  # AWS access key id
    re.compile(r"\b(minioadmin|minio123)\b"),  # well-known MinIO defaults
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
]
# `key: value` / `KEY=value` where the key names a credential.
_ASSIGNMENT = re.compile(
    r"(?i)(access_?key(_id)?|secret_?(access_?)?key|password|minio_root_user|accesskey|secretkey)"
    r"[\"']?\s*[:=]\s*[\"']?(?P<value>[^\s\"'#,}]*)"
)
_PLACEHOLDERS = {"", "change-me", "changeme", "xxxx", "..."}
_SCANNED = ("manifests", "images", "mk", ".dockerignore")


def credential_findings(text: str) -> list[str]:
    """Lines that look like they carry a literal credential."""
    found = []
    for line in text.splitlines():
        if any(pattern.search(line) for pattern in _LITERALS):
            found.append(line.strip())
            continue
        match = _ASSIGNMENT.search(line)
        if match:
            value = match.group("value")
            # Empty values, placeholders and references (${VAR}, <fill-in>, ENV_VAR_NAME) are not credentials.
            if value.lower() not in _PLACEHOLDERS and not re.fullmatch(r"\$.*|<.*|[A-Z][A-Z0-9_]*", value):
                found.append(line.strip())
    return found


def test_credential_scanner_finds_planted_credentials():
    assert credential_findings("AWS_SECRET_ACCESS_KEY=" + "q" * 8 + "9f3Kx")
    assert credential_findings("  accessKey: analyst")
    assert credential_findings(f"key: AKIA{'ABCDEFGHIJKLMNOP'}")
    assert not credential_findings(
        "AWS_SECRET_ACCESS_KEY=\n  key: AWS_SECRET_ACCESS_KEY\n  secretKey: ${SECRET}"
    )


def _repository_files() -> list[Path]:
    proc = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", *_SCANNED],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"git unavailable: {proc.stderr.strip()}")
    return [ROOT / line for line in proc.stdout.splitlines() if (ROOT / line).is_file()]


def test_no_literal_credentials_in_tracked_files():
    files = _repository_files()
    assert any(f.name == "minio.env.example" for f in files)
    assert not any(f.name == "minio.env" for f in files), "minio.env would be committed"
    findings = {
        str(f.relative_to(ROOT)): hits
        for f in files
        if (hits := credential_findings(f.read_text(encoding="utf-8", errors="replace")))
    }
    assert not findings, f"literal credentials: {findings}"


@needs_kubectl
def test_no_literal_credentials_in_rendered_output(rendered):
    for overlay, docs in rendered.items():
        text = yaml.safe_dump_all(docs)
        assert not credential_findings(text), overlay


# ---- submit and make entry points -----------------------------------------------------------------


@pytest.fixture
def package(tmp_path) -> Path:
    spec = {
        "pipelineInfo": {"name": "mammosynth-study"},
        "root": {
            "inputDefinitions": {
                "parameters": {
                    "preset": {"parameterType": "STRING"},
                    "overrides": {"parameterType": "STRING"},
                    "source": {"parameterType": "STRING"},
                    "seeds": {"parameterType": "LIST"},
                }
            }
        },
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_submit_builds_checked_arguments(package, capsys):
    assert (
        submit.main(
            [
                "--package",
                str(package),
                "--dry-run",
                "--preset",
                "tiny",
                "--overrides",
                '{"seeds": [0]}',
                "--param",
                "source=s3://mammosynth/cbis-ddsm",
                "--param",
                "seeds=3",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert (
        '"source": "s3://mammosynth/cbis-ddsm"' in out
        and '"seeds": [\n    3\n  ]' in out
        and '"preset": "tiny"' in out
    )
    assert submit.main(["--package", str(package), "--dry-run", "--param", "sorce=x"]) == 2
    assert (
        "sorce not declared by the pipeline; it declares: overrides, preset, seeds, source"
        in capsys.readouterr().err
    )
    assert submit.main(["--package", str(package), "--dry-run", "--overrides", '{"epochs": 3}']) == 2
    err = capsys.readouterr().err
    assert "unknown config field" in err and "epochs" in err
    assert submit.main(["--package", str(package.with_name("absent.yaml")), "--dry-run"]) == 2
    assert "make compile" in capsys.readouterr().err


def test_submit_without_host_prints_usage(package, capsys, monkeypatch):
    monkeypatch.delenv("KFP_HOST", raising=False)
    assert submit.main(["--package", str(package)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: mammosynth submit") and "KFP_HOST" in err


def test_submit_sends_the_run(package, monkeypatch, capsys):
    """The call reaching kfp.Client carries the checked arguments and the runner service account."""
    import kfp

    calls = {}

    class Recorder:
        def __init__(self, host, namespace):
            calls["host"], calls["namespace"] = host, namespace

        def create_run_from_pipeline_package(self, pipeline_file, **kwargs):
            calls.update(kwargs, file=pipeline_file)
            return type("Run", (), {"run_id": "r-1"})()

    monkeypatch.setattr(kfp, "Client", Recorder)
    assert (
        submit.main(["--host", "http://kfp.example:8080", "--package", str(package), "--preset", "tiny"]) == 0
    )
    assert calls["host"] == "http://kfp.example:8080"
    assert calls["arguments"] == {"preset": "tiny", "overrides": "{}"}
    assert calls["namespace"] is None  # single-user KFP: the server decides
    assert calls["service_account"] == "mammosynth-pipeline-runner"
    assert calls["file"] == str(package) and calls["run_name"] == "mammosynth-tiny"
    assert "runs/details/r-1" in capsys.readouterr().out


def test_submit_namespace_also_places_the_served_model(package, capsys):
    spec = yaml.safe_load(package.read_text())
    spec["root"]["inputDefinitions"]["parameters"]["namespace"] = {"parameterType": "STRING"}
    package.write_text(yaml.safe_dump(spec))
    assert submit.main(["--package", str(package), "--dry-run", "--namespace", "team-a"]) == 0
    assert '"namespace": "team-a"' in capsys.readouterr().out
    args = ["--package", str(package), "--dry-run", "--namespace", "team-a", "--param", "namespace=serving"]
    assert submit.main(args) == 0
    assert '"namespace": "serving"' in capsys.readouterr().out


def _make(*args: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **env}
    return subprocess.run(
        ["make", "--no-print-directory", "-f", "mk/cluster.mk", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=full_env,
        timeout=60,
    )


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_targets_explain_missing_arguments():
    proc = _make("images", "REGISTRY=")
    assert proc.returncode != 0 and "usage: make images REGISTRY=" in proc.stderr
    proc = _make("images", "REGISTRY=ghcr.io/example", "CONTAINER_TOOL=")
    assert proc.returncode != 0 and "neither docker nor podman" in proc.stderr
    proc = _make("submit", "KFP_HOST=")
    assert proc.returncode != 0 and "usage: make submit KFP_HOST=" in proc.stderr
    proc = _make(
        "deploy", "REGISTRY=ghcr.io/example", "CREDENTIALS_ENV=manifests/credentials/minio.env.example"
    )
    assert proc.returncode != 0 and "fill in manifests/credentials/minio.env.example first" in proc.stderr
    targets = re.findall(r"^([a-zA-Z_-]+):.*## ", (ROOT / "mk" / "cluster.mk").read_text(), re.M)
    assert {"images", "deploy", "submit", "render", "lint-images"} <= set(targets)


@needs_kubectl
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_deploy_overlay_sets_registry_and_namespace(tmp_path):
    """`make deploy` renders the chosen overlay into the KFP namespace with the pushed image."""
    namespace = "kubeflow-user-example-com"
    proc = _make(
        "build/deploy/gpu/kustomization.yaml",
        "OVERLAY=gpu",
        "REGISTRY=ghcr.io/example",
        "TAG=v9",
        f"NAMESPACE={namespace}",
    )
    assert proc.returncode == 0, proc.stderr
    docs = _kustomize(ROOT / "build" / "deploy" / "gpu")
    runtime = _find(docs, "ServingRuntime", "mammosynth-server")
    assert runtime["spec"]["containers"][0]["image"] == "ghcr.io/example/mammosynth-server:v9"
    assert _find(docs, "Namespace", namespace)
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {namespace}
    subjects = _find(docs, "RoleBinding", "mammosynth-pipeline-runner")["subjects"]
    assert {s["name"] for s in subjects} == {"mammosynth-pipeline-runner", *DEFAULT_RUNNERS}
    assert {s["namespace"] for s in subjects} == {namespace}  # KFP's own accounts moved there too
    for doc in docs:
        k8s.validate_object(doc)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))


def test_tune_experiment_fits_the_cluster_wiring():
    """The Experiment the tune step builds passes the Katib schema check, and its trial pods land on
    the gpu overlay's pool with the Secret/ConfigMap the manifests create."""
    katib = pytest.importorskip(
        "mammosynth.cluster.katib", reason="the tune helper's mammosynth.cluster.katib is not there yet"
    )
    pool = submit.gpu_env(MANIFESTS / "components" / "gpu" / "gpu-pool.yaml")
    experiment = katib.build_experiment(
        "mammosynth-tune",
        "mammosynth",
        image="ghcr.io/example/mammosynth-trainer:v1",
        data_uri="s3://mammosynth/prepared",
        node_selector={pool["MAMMOSYNTH_GPU_NODE_LABEL"]: pool["MAMMOSYNTH_GPU_NODE_VALUE"]},
        tolerations=[
            {"key": pool["MAMMOSYNTH_GPU_TOLERATION_KEY"], "operator": "Exists", "effect": "NoSchedule"}
        ],
    )
    k8s.validate_katib_experiment(experiment)
    text = yaml.safe_dump(experiment)
    assert CREDENTIAL_SECRET in text and "mammosynth-storage" in text


def test_submit_converts_and_checks_the_typed_run_parameters(tmp_path, capsys):
    import json

    spec = {
        "pipelineInfo": {"name": "mammosynth-study"},
        "root": {
            "inputDefinitions": {
                "parameters": {
                    "preset": {"parameterType": "STRING"},
                    "overrides": {"parameterType": "STRING"},
                    "seeds": {"parameterType": "LIST"},
                    "synthetic_ratios": {"parameterType": "LIST"},
                    "gan_steps": {"parameterType": "NUMBER_INTEGER"},
                }
            }
        },
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    args = ["--package", str(path), "--dry-run", "--preset", "tiny", "--param", "seeds=0,1,2"]
    assert submit.main([*args, "--param", "synthetic_ratios=[0.25, 1]", "--param", "gan_steps=40"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["seeds"] == [0, 1, 2] and out["synthetic_ratios"] == [0.25, 1] and out["gan_steps"] == 40
    assert submit.main([*args, "--param", "gan_steps=-1"]) == 2
    assert "config field gan.steps (run parameter gan_steps)" in capsys.readouterr().err
