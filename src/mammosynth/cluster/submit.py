r"""Submit the compiled study pipeline to a Kubeflow Pipelines 2.x endpoint (`make submit`).

Arguments are checked before anything is sent: the preset and overrides must load with
`mammosynth.config.load_config`, and every parameter must be declared by the compiled pipeline.

Examples:
    python -m mammosynth.cluster.submit --host http://localhost:8080 --preset cbis-ddsm \
        --source s3://mammosynth/cbis-ddsm
    python -m mammosynth.cluster.submit --dry-run --preset tiny          # print the run's arguments only
    python -m mammosynth.cluster.submit --gpu-env manifests/components/gpu/gpu-pool.yaml   # KEY=VALUE lines
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from mammosynth.config import PRESETS, TYPED_PARAMETERS, load_config, resolve
from mammosynth.logs import setup_logging

log = logging.getLogger(__name__)

DEFAULT_PACKAGE = "build/mammosynth-study.yaml"
DEFAULT_SERVICE_ACCOUNT = "mammosynth-pipeline-runner"  # manifests/base/service-accounts.yaml


def pipeline_parameters(package: str | Path) -> dict[str, dict[str, Any]]:
    """The root input parameters a compiled pipeline YAML declares (name -> definition).

    Raises:
        FileNotFoundError: the package does not exist (compile it first).
        ValueError: the file is not a compiled KFP v2 pipeline.
    """
    import yaml

    path = Path(package)
    if not path.is_file():
        raise FileNotFoundError(f"pipeline package {path} not found; compile it first (make compile)")
    with open(path, encoding="utf-8") as handle:
        docs = [doc for doc in yaml.safe_load_all(handle) if doc]
    spec = docs[0] if docs else None
    if not isinstance(spec, dict) or "root" not in spec or "pipelineInfo" not in spec:
        raise ValueError(f"{path} is not a compiled KFP v2 pipeline (no pipelineInfo/root)")
    return dict(spec["root"].get("inputDefinitions", {}).get("parameters", {}))


def build_arguments(
    declared: dict[str, dict[str, Any]], preset: str, overrides: str, extra: list[str]
) -> dict[str, Any]:
    """Pipeline arguments from a preset, JSON overrides and ``KEY=VALUE`` pairs.

    Raises:
        ValueError: unknown preset/config field (from `load_config`), a malformed pair, or a
            parameter the pipeline does not declare (the declared ones are listed).
    """
    load_config(preset, overrides)  # fails here, with the config's own message, not in the cluster
    arguments: dict[str, Any] = {"preset": preset, "overrides": overrides or "{}"}
    for pair in extra:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--param {pair!r}: expected KEY=VALUE")
        arguments[key] = value
    unknown = sorted(set(arguments) - set(declared))
    if unknown:
        raise ValueError(
            f"parameter(s) {', '.join(unknown)} not declared by the pipeline; "
            f"it declares: {', '.join(sorted(declared)) or '(none)'}"
        )
    for key, definition in declared.items():
        kind = definition.get("parameterType")
        if key in arguments and isinstance(arguments[key], str):
            if kind == "NUMBER_INTEGER":
                arguments[key] = int(arguments[key])
            elif kind == "NUMBER_DOUBLE":
                arguments[key] = float(arguments[key])
            elif kind == "BOOLEAN":
                arguments[key] = arguments[key].lower() in {"1", "true", "yes"}
            elif kind == "LIST":
                arguments[key] = _list_value(key, arguments[key])
    typed = {k: v for k, v in arguments.items() if k in TYPED_PARAMETERS or k == "synthetic_ratios"}
    resolve(preset, overrides, **typed)  # the typed run parameters, checked as resolve_config will
    return arguments


def _list_value(key: str, text: str) -> list:
    """A LIST parameter from ``--param``: a JSON array or comma-separated values (``seeds=0,1,2``)."""
    if text.strip().startswith("["):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(
                f"--param {key}={text}: not a JSON array ({exc.msg}); or use {key}=a,b,c"
            ) from None
        return value if isinstance(value, list) else [value]

    def item(part: str) -> Any:
        for kind in (int, float):
            try:
                return kind(part)
            except ValueError:
                pass
        return part

    return [item(part.strip()) for part in text.split(",") if part.strip()]


def gpu_env(config_map_file: str | Path) -> dict[str, str]:
    """The ``data`` of the ConfigMap in a YAML file (the gpu overlay's ``mammosynth-gpu-pool``).

    Raises:
        ValueError: the file holds no ConfigMap with string data.
    """
    import yaml

    with open(config_map_file, encoding="utf-8") as handle:
        for doc in yaml.safe_load_all(handle):
            if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
                data = doc.get("data") or {}
                if not all(isinstance(v, str) for v in data.values()):
                    raise ValueError(f"{config_map_file}: ConfigMap data values must be strings")
                return dict(data)
    raise ValueError(f"{config_map_file}: no ConfigMap in the file")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mammosynth submit",
        description="Create a Kubeflow Pipelines run of the compiled study pipeline.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("Examples:", 1)[1],
    )
    parser.add_argument(
        "--host",
        default=os.environ.get("KFP_HOST", ""),
        help="KFP API endpoint, e.g. http://localhost:8080 after "
        "`kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80` (env KFP_HOST)",
    )
    parser.add_argument("--package", default=DEFAULT_PACKAGE, help="compiled pipeline YAML (%(default)s)")
    parser.add_argument(
        "--preset", default="cbis-ddsm", choices=sorted(PRESETS), help="config preset (%(default)s)"
    )
    parser.add_argument("--overrides", default="{}", help="JSON object of config overrides")
    parser.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another pipeline parameter, e.g. source=s3://mammosynth/cbis-ddsm (repeatable)",
    )
    parser.add_argument("--experiment", default="mammosynth", help="KFP experiment name (%(default)s)")
    parser.add_argument("--run-name", default="", help="run name (default: mammosynth-<preset>)")
    parser.add_argument(
        "--namespace",
        default=os.environ.get("KFP_NAMESPACE") or None,
        help="Kubeflow profile namespace in multi-user installs (env KFP_NAMESPACE)",
    )
    parser.add_argument(
        "--service-account",
        default=DEFAULT_SERVICE_ACCOUNT,
        help="service account the run's pods use (%(default)s)",
    )
    parser.add_argument("--dry-run", action="store_true", help="check and print the arguments; send nothing")
    parser.add_argument(
        "--gpu-env",
        metavar="CONFIGMAP_YAML",
        help="print the ConfigMap's data as KEY=VALUE lines (for compiling) and exit",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line (``python -m mammosynth.cluster.submit``).

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit status.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.gpu_env:
        try:
            env = gpu_env(args.gpu_env)
        except (OSError, ValueError) as exc:
            print(f"mammosynth submit: {exc}", file=sys.stderr)
            return 2
        print("\n".join(f"{key}={value}" for key, value in sorted(env.items())))
        return 0
    try:
        declared = pipeline_parameters(args.package)
        arguments = build_arguments(declared, args.preset, args.overrides, args.param)
        if (
            args.namespace
            and "namespace" in declared
            and not any(p.startswith("namespace=") for p in args.param)
        ):
            # The run's pods are in the profile namespace; serve the model there too.
            arguments["namespace"] = args.namespace
    except (OSError, ValueError) as exc:
        print(f"mammosynth submit: {exc}", file=sys.stderr)
        return 2
    if args.dry_run:
        print(json.dumps(arguments, indent=2, sort_keys=True))
        return 0
    if not args.host:
        parser.print_usage(sys.stderr)
        print(
            "mammosynth submit: no KFP endpoint; pass --host or set KFP_HOST "
            "(make submit KFP_HOST=http://localhost:8080)",
            file=sys.stderr,
        )
        return 2
    import kfp

    client = kfp.Client(host=args.host, namespace=args.namespace or "kubeflow")
    run_name = args.run_name or f"mammosynth-{args.preset}"
    log.info("submitting %s to %s as %s", args.package, args.host, run_name)
    result = client.create_run_from_pipeline_package(
        str(args.package),
        arguments=arguments,
        run_name=run_name,
        experiment_name=args.experiment,
        namespace=args.namespace,
        service_account=args.service_account,
    )
    print(f"run {result.run_id} created: {args.host.rstrip('/')}/#/runs/details/{result.run_id}")
    return 0


if __name__ == "__main__":
    setup_logging()
    sys.exit(main())
