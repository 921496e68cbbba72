"""Katib v1beta1 Experiments for the study's search space, built as plain dicts.

`build_experiment` turns `mammosynth.space.SEARCH_SPACE` into an Experiment whose trials are
batch/v1 Jobs running ``python -m mammosynth.train`` with the space's kebab-case flags; the StdOut
metrics collector reads the ``name=value`` lines the trainer prints (`mammosynth.train.METRIC_*`).
`validate_experiment` checks it offline against Katib's own OpenAPI definitions (with unknown
fields rejected), and `run_experiment` submits it in-cluster and waits for the best trial.
"""

from __future__ import annotations

import copy
import json
import logging
import re
import time
from collections.abc import Sequence
from typing import Any

from mammosynth.space import SEARCH_SPACE, Param
from mammosynth.train import ADDITIONAL_METRICS, OBJECTIVE_METRIC

log = logging.getLogger(__name__)

GROUP, VERSION, PLURAL = "kubeflow.org", "v1beta1", "experiments"
API_VERSION = f"{GROUP}/{VERSION}"
PRIMARY_CONTAINER = "training-container"
# Katib's default StdOut filter, spelled out so the contract with the trainer's output is visible.
METRICS_FORMAT = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)"
ALGORITHMS = (
    "tpe",
    "multivariate-tpe",
    "random",
    "grid",
    "bayesianoptimization",
    "cmaes",
    "sobol",
    "hyperband",
)
_SEEDED = {"tpe", "multivariate-tpe", "random", "bayesianoptimization", "cmaes", "sobol"}
_PARAMETER_TYPES = {"int", "double", "categorical", "discrete"}
_OBJECTIVE_TYPES = {"maximize", "minimize"}
_STRATEGIES = {"min", "max", "latest"}
_COLLECTORS = {"StdOut", "File", "TensorFlowEvent", "PrometheusMetric", "Custom", "None", "Push"}
_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.capitalize() for w in rest)


def _parameter(p: Param) -> dict[str, Any]:
    if p.kind == "categorical":
        return {
            "name": p.name,
            "parameterType": "categorical",
            "feasibleSpace": {"list": [str(c) for c in p.choices]},
        }
    if p.kind not in ("int", "double"):
        raise ValueError(f"parameter {p.name}: unknown kind {p.kind!r}")
    fmt = (lambda v: str(int(v))) if p.kind == "int" else (lambda v: repr(float(v)))
    space = {"min": fmt(p.low), "max": fmt(p.high)}
    if p.log:
        space["distribution"] = "logUniform"
    return {"name": p.name, "parameterType": p.kind, "feasibleSpace": space}


def build_experiment(
    name: str,
    namespace: str,
    *,
    image: str,
    data_uri: str,
    space: Sequence[Param] = SEARCH_SPACE,
    algorithm: str = "tpe",
    max_trials: int = 24,
    parallel_trials: int = 3,
    max_failed_trials: int | None = None,
    gpu: bool = True,
    node_selector: dict[str, str] | None = None,
    tolerations: list[dict[str, Any]] | None = None,
    model: str = "tuned_cnn",
    epochs: int = 10,
    batch_size: int = 32,
    seed: int = 0,
    storage_secret: str | None = "mammosynth-minio",
    storage_config_map: str | None = "mammosynth-storage",
    cpu: str = "4",
    memory: str = "16Gi",
) -> dict[str, Any]:
    """A Katib v1beta1 Experiment maximising validation AUC over ``space``.

    Args:
        name: Experiment name (DNS-1123 label).
        namespace: Kubernetes namespace (a Kubeflow profile namespace).
        image: trainer image (has ``mammosynth`` installed).
        data_uri: prepared set the trials read (``s3://...``; credentials from ``storage_secret``).
        space: hyperparameters to search (flags ``--<name-with-dashes>`` of ``mammosynth train``).
        algorithm: Katib suggestion algorithm (``tpe``, ``random``, ``bayesianoptimization``, ...).
        max_trials: trials to run.
        parallel_trials: trials run at once.
        max_failed_trials: failures tolerated before the Experiment fails (default: max_trials // 4 + 1).
        gpu: request one ``nvidia.com/gpu`` per trial.
        node_selector: trial pod node selector (with ``gpu``, default ``nvidia.com/gpu.present=true``).
        tolerations: trial pod tolerations (with ``gpu``, default: tolerate the ``nvidia.com/gpu`` taint).
        model: classifier every trial trains (``mammosynth train --model``).
        epochs: epochs per trial (also the early-stopping patience, so no trial stops early).
        batch_size: batch size of every trial.
        seed: trainer seed of every trial, and the suggestion algorithm's ``random_state`` where it has one.
        storage_secret: Secret imported as environment (S3 credentials); None for none.
        storage_config_map: ConfigMap imported as environment (S3 endpoint); None for none.
        cpu: per-trial CPU request.
        memory: per-trial memory request and limit.

    Raises:
        ValueError: bad name, algorithm or counts.
    """
    _check_experiment_args(name, algorithm, max_trials, parallel_trials, space)
    command, trial_parameters = _trial_command(space, data_uri, model, epochs, batch_size, seed)
    container = _trial_container(image, command, cpu, memory, storage_secret, storage_config_map)
    failures = max_failed_trials if max_failed_trials is not None else max_trials // 4 + 1
    return {
        "apiVersion": API_VERSION,
        "kind": "Experiment",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "mammosynth"},
        },
        "spec": {
            **_search_spec(space, algorithm, seed, max_trials, parallel_trials, failures),
            "trialTemplate": _trial_template(
                trial_parameters, _pod_spec(container, gpu, node_selector, tolerations)
            ),
        },
    }


def _check_experiment_args(
    name: str, algorithm: str, max_trials: int, parallel_trials: int, space: Sequence[Param]
) -> None:
    if not _DNS1123.match(name) or len(name) > 63:
        raise ValueError(f"experiment name {name!r} must be a DNS-1123 label (lowercase, digits, '-', <= 63)")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown Katib algorithm {algorithm!r}; choose one of: {', '.join(ALGORITHMS)}")
    if max_trials < 1 or parallel_trials < 1:
        raise ValueError(f"max_trials and parallel_trials must be >= 1, got {max_trials}, {parallel_trials}")
    if not space:
        raise ValueError("empty search space")


def _trial_command(
    space: Sequence[Param], data_uri: str, model: str, epochs: int, batch_size: int, seed: int
) -> tuple[list[str], list[dict[str, str]]]:
    """The trainer command with one ``${trialParameters.x}`` flag per parameter, and those parameters."""
    command = [
        "python",
        "-m",
        "mammosynth.train",
        "--data",
        data_uri,
        "--out",
        "/tmp/trial",
        "--model",
        model,
        "--epochs",
        str(epochs),
        "--batch-size",
        str(batch_size),
        "--seed",
        str(seed),
        "--patience",
        str(epochs),
        "--no-save-model",
    ]
    trial_parameters = []
    for p in space:
        ref = _camel(p.name)
        command += [p.flag, f"${{trialParameters.{ref}}}"]
        trial_parameters.append({"name": ref, "description": f"{p.name} ({p.kind})", "reference": p.name})
    return command, trial_parameters


def _trial_container(
    image: str,
    command: list[str],
    cpu: str,
    memory: str,
    storage_secret: str | None,
    storage_config_map: str | None,
) -> dict[str, Any]:
    """The trial's primary container, with the storage Secret/ConfigMap as environment when given."""
    container: dict[str, Any] = {
        "name": PRIMARY_CONTAINER,
        "image": image,
        "command": command,
        "env": [{"name": "TF_CPP_MIN_LOG_LEVEL", "value": "2"}, {"name": "PYTHONUNBUFFERED", "value": "1"}],
        "resources": {"requests": {"cpu": cpu, "memory": memory}, "limits": {"memory": memory}},
    }
    env_from = []
    if storage_secret:
        env_from.append({"secretRef": {"name": storage_secret}})
    if storage_config_map:
        env_from.append({"configMapRef": {"name": storage_config_map}})
    if env_from:
        container["envFrom"] = env_from
    return container


def _pod_spec(
    container: dict[str, Any],
    gpu: bool,
    node_selector: dict[str, str] | None,
    tolerations: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    """The trial pod: with ``gpu``, one GPU and GPU-node placement (defaults unless given)."""
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if gpu:
        container["resources"]["limits"]["nvidia.com/gpu"] = "1"
        pod_spec["nodeSelector"] = (
            node_selector if node_selector is not None else {"nvidia.com/gpu.present": "true"}
        )
        pod_spec["tolerations"] = (
            tolerations
            if tolerations is not None
            else [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        )
    else:
        if node_selector:
            pod_spec["nodeSelector"] = node_selector
        if tolerations:
            pod_spec["tolerations"] = tolerations
    return pod_spec


def _search_spec(
    space: Sequence[Param], algorithm: str, seed: int, max_trials: int, parallel_trials: int, max_failed: int
) -> dict[str, Any]:
    """Objective, algorithm, trial counts, metrics collector and parameters of the Experiment ``spec``."""
    algo: dict[str, Any] = {"algorithmName": algorithm}
    if algorithm in _SEEDED:
        algo["algorithmSettings"] = [{"name": "random_state", "value": str(seed)}]
    return {
        "objective": {
            "type": "maximize",
            "objectiveMetricName": OBJECTIVE_METRIC,
            "additionalMetricNames": list(ADDITIONAL_METRICS),
            # The trainer's last line reports the restored best epoch, so "latest" is the kept model.
            "metricStrategies": [{"name": OBJECTIVE_METRIC, "value": "latest"}],
        },
        "algorithm": algo,
        "parallelTrialCount": int(parallel_trials),
        "maxTrialCount": int(max_trials),
        "maxFailedTrialCount": int(max_failed),
        "metricsCollectorSpec": {
            "collector": {"kind": "StdOut"},
            "source": {"filter": {"metricsFormat": [METRICS_FORMAT]}},
        },
        "parameters": [_parameter(p) for p in space],
    }


def _trial_template(trial_parameters: list[dict[str, str]], pod_spec: dict[str, Any]) -> dict[str, Any]:
    """The trial template: a batch/v1 Job (no retries, no Istio sidecar) running ``pod_spec``."""
    return {
        "primaryContainerName": PRIMARY_CONTAINER,
        "trialParameters": trial_parameters,
        "trialSpec": {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "spec": {
                "backoffLimit": 0,
                "template": {
                    # Istio's sidecar would keep the pod (and so the trial) running after training.
                    "metadata": {"annotations": {"sidecar.istio.io/inject": "false"}},
                    "spec": pod_spec,
                },
            },
        },
    }


def validate_experiment(obj: dict[str, Any]) -> None:
    """Check an Experiment offline, against Katib's schema and what the schema cannot say.

    The structure goes through `mammosynth.cluster.k8s.validate_katib_experiment` (``spec`` against
    Katib's ``v1beta1.ExperimentSpec``, the trial Job against the core model, unknown fields rejected);
    then enums, names, that every ``${trialParameters.x}`` is declared, and that the primary container
    exists.

    Raises:
        ValueError: every problem found, one per line, each with its field path.
    """
    from mammosynth.cluster import k8s

    problems: list[str] = []
    try:
        k8s.validate_katib_experiment(obj)
    except ValueError as exc:
        problems += [line.strip().removeprefix("- ") for line in str(exc).splitlines()[1:]]
    if obj.get("apiVersion") != API_VERSION or obj.get("kind") != "Experiment":
        problems.append(
            f"apiVersion/kind must be {API_VERSION}/Experiment, got {obj.get('apiVersion')}/{obj.get('kind')}"
        )
    extra_top = set(obj) - {"apiVersion", "kind", "metadata", "spec", "status"}
    if extra_top:
        problems.append(f"unknown top-level field(s): {sorted(extra_top)}")
    name = (obj.get("metadata") or {}).get("name", "")
    if not _DNS1123.match(str(name)):
        problems.append(f"metadata.name {name!r} is not a DNS-1123 label")
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        raise ValueError("Experiment has no spec object")
    problems += _search_problems(spec)
    param_names = {p.get("name") for p in spec.get("parameters") or []}
    problems += _template_problems(spec.get("trialTemplate") or {}, param_names)
    if problems:
        raise ValueError("invalid Katib Experiment:\n  " + "\n  ".join(problems))


def _search_problems(spec: dict[str, Any]) -> list[str]:
    """Enum and presence problems of the objective, metrics collector, algorithm and parameters."""
    problems = []
    objective = spec.get("objective") or {}
    if objective.get("type") not in _OBJECTIVE_TYPES:
        problems.append(
            f"spec.objective.type must be one of {sorted(_OBJECTIVE_TYPES)}, got {objective.get('type')!r}"
        )
    if not objective.get("objectiveMetricName"):
        problems.append("spec.objective.objectiveMetricName is required")
    for s in objective.get("metricStrategies") or []:
        if s.get("value") not in _STRATEGIES:
            problems.append(
                f"spec.objective.metricStrategies: {s.get('value')!r} not in {sorted(_STRATEGIES)}"
            )
    kind = ((spec.get("metricsCollectorSpec") or {}).get("collector") or {}).get("kind", "StdOut")
    if kind not in _COLLECTORS:
        problems.append(f"spec.metricsCollectorSpec.collector.kind {kind!r} not in {sorted(_COLLECTORS)}")
    algorithm = (spec.get("algorithm") or {}).get("algorithmName")
    if algorithm not in ALGORITHMS:
        problems.append(f"spec.algorithm.algorithmName {algorithm!r} not in {list(ALGORITHMS)}")
    parameters = spec.get("parameters") or []
    for i, p in enumerate(parameters):
        if p.get("parameterType") not in _PARAMETER_TYPES:
            problems.append(
                f"spec.parameters.{i}.parameterType {p.get('parameterType')!r} "
                f"not in {sorted(_PARAMETER_TYPES)}"
            )
    if not parameters:
        problems.append("spec.parameters is empty")
    return problems


def _template_problems(template: dict[str, Any], param_names: set) -> list[str]:
    """Trial parameters that reference unknown parameters or are used undeclared; a missing primary container."""
    problems = []
    declared = {tp.get("name") for tp in template.get("trialParameters") or []}
    for tp in template.get("trialParameters") or []:
        if tp.get("reference") not in param_names:
            problems.append(
                f"spec.trialTemplate.trialParameters {tp.get('name')!r} references unknown "
                f"parameter {tp.get('reference')!r}"
            )
    trial_spec = template.get("trialSpec") or {}
    used = set(re.findall(r"\$\{trialParameters\.([^}]+)\}", json.dumps(trial_spec)))
    for missing in sorted(used - declared):
        problems.append(
            f"spec.trialTemplate.trialSpec uses ${{trialParameters.{missing}}} which is not declared"
        )
    if trial_spec.get("kind") == "Job":
        pod = ((trial_spec.get("spec") or {}).get("template") or {}).get("spec")
        if not isinstance(pod, dict):
            problems.append("spec.trialTemplate.trialSpec: Job has no spec.template.spec")
        else:
            names = [c.get("name") for c in pod.get("containers") or []]
            if template.get("primaryContainerName") not in names:
                problems.append(
                    f"spec.trialTemplate.primaryContainerName {template.get('primaryContainerName')!r} "
                    f"is not a container of the trial pod ({names})"
                )
    return problems


def _condition(status: dict[str, Any]) -> str | None:
    for cond in status.get("conditions") or []:
        if cond.get("status") == "True" and cond.get("type") in ("Succeeded", "Failed"):
            return cond["type"]
    return None


def run_experiment(
    obj: dict[str, Any],
    timeout_s: float = 3600,
    *,
    poll_s: float = 15.0,
    api=None,
    delete_existing: bool = False,
) -> dict[str, Any]:
    """Create the Experiment in-cluster, wait for it, and return its best trial.

    Args:
        obj: an Experiment from `build_experiment` (validated first).
        timeout_s: give up after this many seconds.
        poll_s: seconds between status polls (each logs progress).
        api: a ``kubernetes.client.CustomObjectsApi``; default: in-cluster config, else ~/.kube/config.
        delete_existing: replace an Experiment of the same name instead of failing.

    Returns:
        ``{"best_params": {name: str value}, "best_value", "metric", "n_trials", "trial_name", "trials": []}``.

    Raises:
        RuntimeError: the Experiment failed or ended without an optimal trial.
        TimeoutError: not finished within ``timeout_s``.
    """
    validate_experiment(obj)
    api = api if api is not None else _custom_objects_api()
    ns, name = obj["metadata"]["namespace"], obj["metadata"]["name"]
    if delete_existing:
        try:
            api.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
            time.sleep(poll_s)
        except Exception as exc:  # noqa: BLE001  (absent is fine; anything else shows up on create)
            log.debug("no previous experiment %s/%s: %s", ns, name, exc)
    api.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, copy.deepcopy(obj))
    log.info("created Katib Experiment %s/%s (%s trials max)", ns, name, obj["spec"]["maxTrialCount"])
    metric = obj["spec"]["objective"]["objectiveMetricName"]
    status = _wait_for(api, ns, name, metric, timeout_s, poll_s)
    optimal = status.get("currentOptimalTrial") or {}
    params = {a["name"]: a["value"] for a in optimal.get("parameterAssignments") or []}
    value = _best_value(status, metric)
    if not params or value is None:
        raise RuntimeError(
            f"Katib Experiment {ns}/{name} succeeded without an optimal trial "
            f"(did trials print '{metric}=<value>' on stdout?)"
        )
    return {
        "best_params": params,
        "best_value": value,
        "metric": metric,
        "n_trials": int(status.get("trials", status.get("trialsSucceeded", 0)) or 0),
        "trial_name": optimal.get("bestTrialName"),
        "trials": [],
    }


def _custom_objects_api():
    """A ``CustomObjectsApi`` from the in-cluster config, else ~/.kube/config."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()
    return client.CustomObjectsApi()


def _wait_for(api, ns: str, name: str, metric: str, timeout_s: float, poll_s: float) -> dict[str, Any]:
    """Poll the Experiment (logging progress) until it succeeds; return its status.

    Raises:
        RuntimeError: the Experiment failed.
        TimeoutError: not finished within ``timeout_s``.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        exp = api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        status = exp.get("status") or {}
        log.info(
            "experiment %s: %s trials running, %s succeeded, %s failed (best so far: %s)",
            name,
            status.get("trialsRunning", 0),
            status.get("trialsSucceeded", 0),
            status.get("trialsFailed", 0),
            _best_value(status, metric),
        )
        state = _condition(status)
        if state == "Failed":
            msgs = [c.get("message", "") for c in status.get("conditions") or [] if c.get("type") == "Failed"]
            raise RuntimeError(f"Katib Experiment {ns}/{name} failed: {'; '.join(msgs)}")
        if state == "Succeeded":
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"Katib Experiment {ns}/{name} not finished after {timeout_s:.0f}s "
                f"(kubectl -n {ns} get experiment {name})"
            )
        time.sleep(poll_s)


def _best_value(status: dict[str, Any], metric: str) -> float | None:
    for m in ((status.get("currentOptimalTrial") or {}).get("observation") or {}).get("metrics") or []:
        if m.get("name") == metric:
            for key in ("latest", "max", "value"):
                try:
                    return float(m[key])
                except (KeyError, TypeError, ValueError):
                    continue
    return None
