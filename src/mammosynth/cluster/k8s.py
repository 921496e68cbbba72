"""Offline schema checks for the Kubernetes objects we render or create.

No cluster is needed: core kinds are checked against the official client's models (every field
name, nesting and required field the client knows), KServe objects against the CRD's OpenAPI v3
schema and a Katib Experiment's spec against ``v1beta1.ExperimentSpec`` from Katib's OpenAPI spec.
None of those schemas forbids unknown fields, so a misspelt field (``minReplica``) would pass
silently and be dropped by the API server; `strict` closes every declared object first.

The CRD files ship inside the package (``mammosynth/cluster/schemas``, see its README for source and
commit); set ``MAMMOSYNTH_CRDS`` to use another copy.
"""

from __future__ import annotations

import copy
import functools
import importlib.resources
import json
import os
import re
from pathlib import Path
from typing import Any

CRDS_ENV = "MAMMOSYNTH_CRDS"
INFERENCE_SERVICE_CRD = "kserve.inferenceservices.crd.yaml"
SERVING_RUNTIME_CRD = "kserve.servingruntimes.crd.yaml"
KATIB_OPENAPI = "katib.v1beta1.swagger.json"
KATIB_EXPERIMENT_SPEC = "v1beta1.ExperimentSpec"

_PRESERVE = "x-kubernetes-preserve-unknown-fields"


def crd_dir() -> Path:
    """Return the directory holding the CRD schemas.

    ``$MAMMOSYNTH_CRDS`` if set (an override); else the ``schemas`` folder installed with the package.

    Raises:
        FileNotFoundError: the override is not a directory, or the package's schemas are missing.
    """
    env = os.environ.get(CRDS_ENV)
    if env:
        path = Path(env)
        if not path.is_dir():
            raise FileNotFoundError(f"{CRDS_ENV}={env} is not a directory; point it at the CRD schemas")
        return path
    path = Path(str(importlib.resources.files("mammosynth") / "cluster" / "schemas"))
    if not (path / INFERENCE_SERVICE_CRD).is_file():
        raise FileNotFoundError(
            f"the CRD schemas are missing from the installed package ({path}); reinstall mammosynth "
            f"(pip install .) or set {CRDS_ENV} to a folder holding them"
        )
    return path


def load_crd_schema(path: str | Path, version: str) -> dict[str, Any]:
    """Return ``spec.versions[name == version].schema.openAPIV3Schema`` of a CRD YAML file.

    Args:
        path: CRD file; a bare file name is looked up in `crd_dir`.
        version: API version name, e.g. ``"v1beta1"``.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not a CRD, or it does not serve ``version`` (the served ones are listed).
    """
    path = Path(path)
    if not path.is_file() and len(path.parts) == 1:
        path = crd_dir() / path
    return copy.deepcopy(_load_crd_schema_cached(str(path.resolve()), version))


@functools.cache
def _load_crd_schema_cached(path: str, version: str) -> dict[str, Any]:
    import yaml

    with open(path, encoding="utf-8") as handle:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # the KServe CRD is ~40k lines
        docs = [doc for doc in yaml.load_all(handle, Loader=loader) if doc]
    crds = [doc for doc in docs if doc.get("kind") == "CustomResourceDefinition"]
    if not crds:
        raise ValueError(f"{path}: no CustomResourceDefinition in the file")
    versions = crds[0].get("spec", {}).get("versions", [])
    for entry in versions:
        if entry.get("name") == version:
            schema = entry.get("schema", {}).get("openAPIV3Schema")
            if not isinstance(schema, dict):
                raise ValueError(f"{path}: version {version} has no schema.openAPIV3Schema")
            return schema
    names = ", ".join(str(entry.get("name")) for entry in versions)
    raise ValueError(f"{path}: CRD has no version {version!r}; it serves: {names}")


def strict(schema: Any) -> Any:
    """Return a copy of an OpenAPI schema whose closed objects reject unknown keys.

    Closed: an object with declared ``properties`` and no ``additionalProperties`` /
    ``x-kubernetes-preserve-unknown-fields``. Open maps (``additionalProperties`` set) and
    preserve-unknown objects stay open, and so does everything under a preserve-unknown object,
    because their keys are data, not field names.
    """
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    if schema.get(_PRESERVE):
        return copy.deepcopy(schema)
    out = {key: strict(value) for key, value in schema.items()}
    if "properties" in schema and "additionalProperties" not in schema:
        # `properties` maps field names to schemas; strict() above recursed into the names' values.
        out["additionalProperties"] = False
    return out


def _format_errors(kind: str, name: str, problems: list[str]) -> ValueError:
    lines = "\n".join(f"  - {problem}" for problem in problems)
    return ValueError(f"{kind} {name!r}: {len(problems)} problem(s):\n{lines}")


def _json_path(parts: Any) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out.lstrip(".") or "<root>"


def _schema_problems(schema: dict[str, Any], instance: Any, prefix: str = "") -> list[str]:
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(schema)
    problems = []
    for error in sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path))):
        where = _json_path([*([prefix] if prefix else []), *error.absolute_path])
        problems.append(f"{where}: {_short_message(error)}")
    return problems


def _short_message(error: Any) -> str:
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - allowed)
        return f"unknown field(s) {', '.join(map(repr, unknown))}; known: {', '.join(sorted(allowed))}"
    message = error.message
    return message if len(message) <= 300 else message[:300] + "..."


def _name_of(obj: Any) -> str:
    if isinstance(obj, dict):
        meta = obj.get("metadata") or {}
        if isinstance(meta, dict):
            return str(meta.get("name", "<unnamed>"))
    return "<unnamed>"


def _crd_object_problems(obj: Any, crd_file: str, group: str, kind: str) -> list[str]:
    if not isinstance(obj, dict):
        return [f"<root>: expected a mapping, got {type(obj).__name__}"]
    problems: list[str] = []
    api_version = str(obj.get("apiVersion", ""))
    group_part, _, version = api_version.rpartition("/")
    if group_part != group or not version:
        problems.append(f"apiVersion: expected {group}/<version>, got {api_version!r}")
        return problems
    if obj.get("kind") != kind:
        problems.append(f"kind: expected {kind}, got {obj.get('kind')!r}")
    schema = strict(load_crd_schema(crd_file, version))
    problems += _schema_problems(schema, obj)
    # The CRD leaves metadata open; the core model still knows its fields.
    if isinstance(obj.get("metadata"), dict):
        problems += _model_problems(obj["metadata"], "V1ObjectMeta", "metadata")
    return problems


def validate_inference_service(obj: dict[str, Any]) -> None:
    """Check a KServe ``InferenceService`` against its CRD schema with unknown fields rejected.

    Raises:
        ValueError: every problem, one per line, each with its field path.
    """
    problems = _crd_object_problems(obj, INFERENCE_SERVICE_CRD, "serving.kserve.io", "InferenceService")
    if problems:
        raise _format_errors("InferenceService", _name_of(obj), problems)


def validate_serving_runtime(obj: dict[str, Any]) -> None:
    """Check a KServe ``ServingRuntime`` (or ``ClusterServingRuntime``) against its CRD schema.

    Raises:
        ValueError: every problem, one per line, each with its field path.
    """
    kind = obj.get("kind") if isinstance(obj, dict) else None
    kind = kind if kind in {"ServingRuntime", "ClusterServingRuntime"} else "ServingRuntime"
    problems = _crd_object_problems(obj, SERVING_RUNTIME_CRD, "serving.kserve.io", kind)
    if problems:
        raise _format_errors(kind, _name_of(obj), problems)


@functools.cache
def _katib_schema() -> dict[str, Any]:
    path = crd_dir() / KATIB_OPENAPI
    with open(path, encoding="utf-8") as handle:
        spec = json.load(handle)
    schemas = spec.get("components", {}).get("schemas") or spec.get("definitions")
    if not schemas or KATIB_EXPERIMENT_SPEC not in schemas:
        raise ValueError(f"{path}: no {KATIB_EXPERIMENT_SPEC} schema in the file")
    base = "#/components/schemas/" if "components" in spec else "#/definitions/"
    root: dict[str, Any] = {"$ref": base + KATIB_EXPERIMENT_SPEC}
    if "components" in spec:
        root["components"] = {"schemas": strict(schemas)}
    else:
        root["definitions"] = strict(schemas)
    return root


def validate_katib_experiment(obj: dict[str, Any]) -> None:
    """Check a Katib ``Experiment`` against Katib's OpenAPI definitions and the core models.

    apiVersion/kind, metadata via the core model, and ``spec`` against ``v1beta1.ExperimentSpec``
    ($refs resolved, unknown fields rejected). The trial template's ``trialSpec`` is free-form in
    Katib's schema, so when it is a Kubernetes Job its body is checked against the core ``V1Job``
    model too.

    Raises:
        ValueError: every problem, one per line, each with its field path.
    """
    if not isinstance(obj, dict):
        raise _format_errors(
            "Experiment", "<unnamed>", [f"<root>: expected a mapping, got {type(obj).__name__}"]
        )
    problems: list[str] = []
    if obj.get("apiVersion") != "kubeflow.org/v1beta1":
        problems.append(f"apiVersion: expected kubeflow.org/v1beta1, got {obj.get('apiVersion')!r}")
    if obj.get("kind") != "Experiment":
        problems.append(f"kind: expected Experiment, got {obj.get('kind')!r}")
    unknown = sorted(set(obj) - {"apiVersion", "kind", "metadata", "spec", "status"})
    if unknown:
        problems.append(f"<root>: unknown field(s) {', '.join(map(repr, unknown))}")
    if isinstance(obj.get("metadata"), dict):
        problems += _model_problems(obj["metadata"], "V1ObjectMeta", "metadata")
    else:
        problems.append("metadata: required mapping is missing")
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        problems.append("spec: required mapping is missing")
    else:
        problems += _schema_problems(_katib_schema(), spec, "spec")
        trial_spec = (spec.get("trialTemplate") or {}).get("trialSpec")
        if isinstance(trial_spec, dict) and trial_spec.get("kind") == "Job":
            problems += _core_problems(trial_spec, "spec.trialTemplate.trialSpec")
    if problems:
        raise _format_errors("Experiment", _name_of(obj), problems)


# ---- core kinds via the official client's models ------------------------------------------------

_PRIMITIVES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}
# Fields the client types as strings but the API server parses as resource.Quantity, which also
# accepts a bare number (`nvidia.com/gpu: 1`). Everywhere else a number where a string belongs is
# rejected by the server (the classic unquoted `S3_USE_HTTPS: 0` in a ConfigMap).
_QUANTITY_FIELDS = {
    ("V1ResourceRequirements", "limits"),
    ("V1ResourceRequirements", "requests"),
    ("V1VolumeResourceRequirements", "limits"),
    ("V1VolumeResourceRequirements", "requests"),
    ("V1EmptyDirVolumeSource", "size_limit"),
    ("V1ResourceQuotaSpec", "hard"),
    ("V1PersistentVolumeSpec", "capacity"),
    ("V1LimitRangeItem", "default"),
    ("V1LimitRangeItem", "default_request"),
    ("V1LimitRangeItem", "max"),
    ("V1LimitRangeItem", "min"),
    ("V1LimitRangeItem", "max_limit_request_ratio"),
}


def _models() -> Any:
    from kubernetes.client import models

    return models


def model_class_name(api_version: str, kind: str) -> str:
    """``apps/v1`` + ``Deployment`` -> ``V1Deployment``; ``v1`` + ``ConfigMap`` -> ``V1ConfigMap``."""
    version = api_version.rpartition("/")[2]
    return version[:1].upper() + version[1:] + kind


def _model_problems(data: Any, type_name: str, path: str) -> list[str]:
    """Walk raw data along a client type string: unknown keys and shape mismatches."""
    problems: list[str] = []
    if data is None:
        return problems
    if type_name.startswith("quantity:"):
        if type_name.removeprefix("quantity:").startswith("dict("):
            if not isinstance(data, dict):
                return [f"{path}: expected a mapping of quantities, got {type(data).__name__}"]
            items = [(f"{path}.{key}", value) for key, value in data.items()]
        else:
            items = [(path, data)]
        return [
            f"{where}: expected a quantity (string or number), got {value!r}"
            for where, value in items
            if isinstance(value, bool) or not isinstance(value, str | int | float)
        ]
    if type_name.startswith("list["):
        inner = type_name[5:-1]
        if not isinstance(data, list):
            return [f"{path}: expected a list, got {type(data).__name__}"]
        for index, item in enumerate(data):
            problems += _model_problems(item, inner, f"{path}[{index}]")
        return problems
    if type_name.startswith("dict("):
        inner = re.match(r"dict\(([^,]*), (.*)\)", type_name).group(2)
        if not isinstance(data, dict):
            return [f"{path}: expected a mapping, got {type(data).__name__}"]
        for key, value in data.items():
            problems += _model_problems(value, inner, f"{path}.{key}")
        return problems
    if type_name == "object":
        return problems  # int-or-string, quantities, raw extensions: free-form in the client too
    if type_name in _PRIMITIVES:
        allowed = _PRIMITIVES[type_name]
        if isinstance(data, bool) and bool not in allowed or not isinstance(data, allowed):
            problems.append(f"{path}: expected {type_name}, got {type(data).__name__} {data!r}")
        return problems
    if type_name in {"datetime", "date"}:
        return problems
    klass = getattr(_models(), type_name, None)
    if klass is None:
        return [f"{path}: the kubernetes client has no model {type_name}"]
    if not isinstance(data, dict):
        return [f"{path}: expected a {type_name} mapping, got {type(data).__name__}"]
    by_json = {json_key: attr for attr, json_key in klass.attribute_map.items()}
    for key, value in data.items():
        where = f"{path}.{key}" if path else key
        if key not in by_json:
            known = ", ".join(sorted(by_json))
            problems.append(f"{where}: unknown field {key!r} in {type_name}; known: {known}")
            continue
        attr_type = klass.openapi_types[by_json[key]]
        if (type_name, by_json[key]) in _QUANTITY_FIELDS:
            attr_type = f"quantity:{attr_type}"
        problems += _model_problems(value, attr_type, where)
    return problems


class _Response:
    """The one attribute `ApiClient.deserialize` reads from a REST response."""

    def __init__(self, obj: Any) -> None:
        self.data = json.dumps(obj)


def _core_problems(obj: Any, prefix: str = "") -> list[str]:
    if not isinstance(obj, dict):
        return [f"{prefix or '<root>'}: expected a mapping, got {type(obj).__name__}"]
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    where = f"{prefix}." if prefix else ""
    if not api_version or not kind:
        return [f"{where}apiVersion/kind: both are required, got {api_version!r}/{kind!r}"]
    type_name = model_class_name(str(api_version), str(kind))
    if getattr(_models(), type_name, None) is None:
        return [f"{where}kind: no kubernetes client model for {api_version} {kind} ({type_name})"]
    problems = _model_problems(obj, type_name, prefix)
    if problems:
        return problems
    # The walk found the shape right; the constructors add required fields and enum checks.
    from kubernetes.client import ApiClient

    try:
        ApiClient().deserialize(_Response(obj), type_name)
    except (ValueError, TypeError) as exc:
        problems.append(f"{prefix or '<root>'}: {exc}")
    return problems


def validate_core(obj: dict[str, Any]) -> None:
    """Check a core Kubernetes object against the official client's model for its apiVersion and kind.

    Any core kind (Namespace, ConfigMap, Deployment, Job, Role, ...); finds unknown fields, wrong
    shapes and missing required fields.

    Raises:
        ValueError: every problem, one per line, each with its field path.
    """
    problems = _core_problems(obj)
    if problems:
        kind = obj.get("kind", "object") if isinstance(obj, dict) else "object"
        raise _format_errors(str(kind), _name_of(obj), problems)


CRD_VALIDATORS = {
    ("serving.kserve.io", "InferenceService"): validate_inference_service,
    ("serving.kserve.io", "ServingRuntime"): validate_serving_runtime,
    ("serving.kserve.io", "ClusterServingRuntime"): validate_serving_runtime,
    ("kubeflow.org", "Experiment"): validate_katib_experiment,
}


def validate_object(obj: dict[str, Any]) -> None:
    """Dispatch to the validator for the object's kind: a known CRD or a core kind.

    Raises:
        ValueError: the object is invalid, or its kind is neither a known CRD nor a core kind.
    """
    group = str(obj.get("apiVersion", "")).rpartition("/")[0] if isinstance(obj, dict) else ""
    validator = CRD_VALIDATORS.get((group, obj.get("kind") if isinstance(obj, dict) else None))
    (validator or validate_core)(obj)
