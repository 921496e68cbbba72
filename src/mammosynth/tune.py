"""Stage `tune`: hyperparameter search over the study's space, locally (Optuna) or in-cluster (Katib).

The search space is defined once, `mammosynth.space.SEARCH_SPACE`; the Optuna objective and the Katib
Experiment (`mammosynth.cluster.katib.build_experiment`) are both generated from it, and both backends return the
same `TuneResult`. A Katib trial is ``python -m mammosynth.train`` with the space's kebab-case flags,
reporting `mammosynth.train.OBJECTIVE_METRIC` on stdout.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mammosynth.config import ClassifierConfig, TuneConfig
from mammosynth.logs import setup_logging
from mammosynth.space import SEARCH_SPACE, Param, space_for  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

BEST_PARAMS_FILE = "best_params.json"


@dataclass
class TuneResult:
    """Outcome of a search, the same for both backends."""

    best_params: dict[str, Any]
    best_value: float
    n_trials: int
    backend: str
    metric: str = "val_auc"
    trials: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (``best_params.json`` holds them, plus model, seed and epochs)."""
        return asdict(self)


def _suggest(trial, p: Param) -> Any:
    if p.kind == "int":
        return trial.suggest_int(p.name, int(p.low), int(p.high), log=p.log)
    if p.kind == "double":
        return trial.suggest_float(p.name, float(p.low), float(p.high), log=p.log)
    if p.kind == "categorical":
        return trial.suggest_categorical(p.name, list(p.choices))
    raise ValueError(f"parameter {p.name}: unknown kind {p.kind!r} (use int, double or categorical)")


def _admits(param: Param, value: Any) -> bool:
    """Whether ``value`` lies in ``param``'s search space (enqueued trials must)."""
    if param.kind == "categorical":
        return value in param.choices
    return param.low <= float(value) <= param.high


def _run_optuna(
    prepared_dir,
    *,
    n_trials: int,
    epochs_per_trial: int,
    seed: int,
    model: str,
    batch_size: int,
    space: tuple[Param, ...],
    timeout_s: float | None,
    train_kwargs: dict[str, Any],
) -> TuneResult:
    import optuna

    from mammosynth.train import OBJECTIVE_METRIC, train_classifier

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(4, max(1, n_trials // 2)))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    # The configured values go first: the search can then only return something at least as good
    # as the defaults on its own objective, never a worse configuration found by chance.
    baseline = {
        p.name: train_kwargs[p.name]
        for p in space
        if p.name in train_kwargs and _admits(p, train_kwargs[p.name])
    }
    if baseline:
        study.enqueue_trial(baseline, skip_if_exists=True)

    with tempfile.TemporaryDirectory(prefix="mammosynth-tune-") as tmp:

        def objective(trial):
            params = {p.name: _suggest(trial, p) for p in space}
            t0 = time.monotonic()
            metrics = train_classifier(
                prepared_dir,
                Path(tmp) / f"trial-{trial.number}",
                model=model,
                epochs=epochs_per_trial,
                batch_size=batch_size,
                seed=seed,
                patience=epochs_per_trial,
                save_model=False,
                predict_test=False,
                **{**train_kwargs, **params},
            )
            value = metrics[OBJECTIVE_METRIC]
            log.info(
                "trial %d/%d: %s=%.4f with %s (%.1fs)",
                trial.number + 1,
                n_trials,
                OBJECTIVE_METRIC,
                value if value is not None else math.nan,
                params,
                time.monotonic() - t0,
            )
            return float(value) if value is not None and not math.isnan(value) else 0.0

        study.optimize(objective, n_trials=n_trials, timeout=timeout_s)
    trials = [
        {"number": t.number, "params": t.params, "value": t.value, "state": t.state.name}
        for t in study.trials
    ]
    return TuneResult(
        dict(study.best_params),
        float(study.best_value),
        len(study.trials),
        "optuna",
        OBJECTIVE_METRIC,
        trials,
    )


def run_tune(
    prepared_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    backend: str = TuneConfig().backend,
    n_trials: int = TuneConfig().n_trials,
    epochs_per_trial: int = TuneConfig().epochs_per_trial,
    seed: int = 0,
    model: str = "tuned_cnn",
    batch_size: int = ClassifierConfig().batch_size,
    space: tuple[Param, ...] | None = None,
    timeout_s: float | None = TuneConfig().timeout_s,
    data_uri: str | None = None,
    namespace: str = "kubeflow",
    image: str | None = None,
    algorithm: str = TuneConfig().algorithm,
    parallel_trials: int = 2,
    gpu: bool = True,
    experiment_name: str | None = None,
    **train_kwargs: Any,
) -> TuneResult:
    """Search hyperparameters and write ``best_params.json`` to ``out_path``.

    Args:
        prepared_dir: the prepared set (Optuna trains on it locally).
        out_path: the JSON file written (``best_params``, ``best_value``, trials, ...).
        backend: ``optuna`` (local trials through `mammosynth.train.train_classifier`) or ``katib``
            (an Experiment in the cluster, trials are Jobs reading ``data_uri``).
        n_trials: number of trials.
        epochs_per_trial: epochs each trial trains.
        seed: sampler and training seed.
        model: classifier; the space is restricted to its parameters (`space_for`).
        batch_size: per-trial batch size.
        space: override `SEARCH_SPACE` (before restriction to ``model``).
        timeout_s: wall-clock budget of the search.
        data_uri: where Katib trials read the prepared set (``s3://...``); defaults to ``prepared_dir``.
        namespace: Katib: the Experiment's namespace.
        image: Katib: the trainer image; defaults to ``$MAMMOSYNTH_TRAINER_IMAGE``.
        algorithm: Katib: the suggestion algorithm (`mammosynth.cluster.katib.ALGORITHMS`).
        parallel_trials: Katib: trials run at once.
        gpu: Katib: one GPU per trial, on GPU nodes.
        experiment_name: Katib: the Experiment's name; defaults to ``mammosynth-tune-<unix time>``.
        **train_kwargs: fixed `train_classifier` options for Optuna trials (e.g. ``augment``).

    Returns:
        The `TuneResult`.

    Raises:
        ValueError: unknown backend, or n_trials < 1.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be >= 1, got {n_trials}")
    common = {
        "n_trials": n_trials,
        "epochs_per_trial": epochs_per_trial,
        "seed": seed,
        "model": model,
        "batch_size": batch_size,
        "space": space_for(model, space or SEARCH_SPACE),
        "timeout_s": timeout_s,
    }
    if backend == "optuna":
        result = _run_optuna(prepared_dir, **common, train_kwargs=train_kwargs)
    elif backend == "katib":
        cluster = {"namespace": namespace, "image": image, "algorithm": algorithm, "gpu": gpu}
        result = _run_katib(
            str(data_uri or prepared_dir),
            **common,
            **cluster,
            parallel_trials=parallel_trials,
            experiment_name=experiment_name or f"mammosynth-tune-{int(time.time())}",
        )
    else:
        raise ValueError(f"unknown tune backend {backend!r}; use 'optuna' or 'katib'")
    _write_result(Path(out_path), result, backend, model, seed, epochs_per_trial)
    return result


def _run_katib(
    data_uri: str,
    *,
    n_trials: int,
    epochs_per_trial: int,
    seed: int,
    model: str,
    batch_size: int,
    space: tuple[Param, ...],
    timeout_s: float | None,
    namespace: str,
    image: str | None,
    algorithm: str,
    gpu: bool,
    parallel_trials: int,
    experiment_name: str,
) -> TuneResult:
    """Run the search as a Katib Experiment whose trials read ``data_uri``; wait for its best trial.

    Raises:
        ValueError: no trainer image (``image`` nor ``$MAMMOSYNTH_TRAINER_IMAGE``).
    """
    from mammosynth.cluster import katib

    image = image or os.environ.get("MAMMOSYNTH_TRAINER_IMAGE")
    if not image:
        raise ValueError("katib backend needs the trainer image: pass image= or set MAMMOSYNTH_TRAINER_IMAGE")
    experiment = katib.build_experiment(
        experiment_name,
        namespace,
        image=image,
        data_uri=data_uri,
        space=space,
        algorithm=algorithm,
        max_trials=n_trials,
        parallel_trials=parallel_trials,
        gpu=gpu,
        model=model,
        epochs=epochs_per_trial,
        batch_size=batch_size,
        seed=seed,
    )
    katib.validate_experiment(experiment)
    found = katib.run_experiment(experiment, timeout_s=timeout_s or 3600)
    by_name = {p.name: p for p in space}
    best = {k: by_name[k].cast(v) if k in by_name else v for k, v in found["best_params"].items()}
    return TuneResult(
        best, found["best_value"], found["n_trials"], "katib", found["metric"], found.get("trials", [])
    )


def _write_result(
    out: Path, result: TuneResult, backend: str, model: str, seed: int, epochs_per_trial: int
) -> None:
    """Write ``best_params.json`` (the result with the model, seed and epochs it holds for) and log it."""
    from mammosynth.train import _json, _write_atomic

    _write_atomic(
        out, _json({**result.to_dict(), "model": model, "seed": seed, "epochs_per_trial": epochs_per_trial})
    )
    log.info(
        "tune (%s): best %s=%.4f with %s after %d trials",
        backend,
        result.metric,
        result.best_value,
        result.best_params,
        result.n_trials,
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="mammosynth tune",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--preset", default="embedded", help="config preset (mammosynth.config.PRESETS)")
    p.add_argument("--overrides", default="", help="JSON object of config overrides")
    p.add_argument("--data", help="prepared set (local path or s3:// URI) for a search")
    p.add_argument("--out", default=BEST_PARAMS_FILE, help="best_params.json to write")
    p.add_argument("--backend", choices=["optuna", "katib"], default=None, help="default: the preset's")
    p.add_argument("--n-trials", type=int, default=None)
    p.add_argument("--epochs-per-trial", type=int, default=None)
    p.add_argument("--model", default=None, help="default: the preset's classifier")
    p.add_argument(
        "--emit-katib", metavar="FILE", help="write the Katib Experiment YAML and exit (no cluster)"
    )
    p.add_argument("--data-uri", help="prepared-set URI Katib trials read (s3://...)")
    p.add_argument("--name", default="mammosynth-tune", help="Experiment name")
    p.add_argument("--namespace", default="kubeflow")
    p.add_argument("--image", default=os.environ.get("MAMMOSYNTH_TRAINER_IMAGE", "mammosynth-trainer:latest"))
    p.add_argument("--algorithm", default=None, help="Katib algorithm (default: the preset's)")
    p.add_argument("--parallel-trials", type=int, default=2)
    p.add_argument("--no-gpu", action="store_true", help="trials request no GPU")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line (``python -m mammosynth.tune``).

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        The process exit status.
    """
    from mammosynth.config import load_config

    args = _parser().parse_args(argv)
    setup_logging()
    try:
        cfg = load_config(args.preset, args.overrides)
        t = cfg.tune
        model = args.model or cfg.classifier.model
        n_trials = args.n_trials or t.n_trials
        epochs = args.epochs_per_trial or t.epochs_per_trial
        if args.emit_katib:
            import yaml

            from mammosynth.cluster import katib

            if not args.data_uri:
                raise ValueError("--emit-katib needs --data-uri (where trials read the prepared set)")
            exp = katib.build_experiment(
                args.name,
                args.namespace,
                image=args.image,
                data_uri=args.data_uri,
                space=space_for(model),
                algorithm=args.algorithm or t.algorithm,
                max_trials=n_trials,
                parallel_trials=args.parallel_trials,
                gpu=not args.no_gpu,
                model=model,
                epochs=epochs,
                batch_size=cfg.classifier.batch_size,
                seed=cfg.seed,
            )
            katib.validate_experiment(exp)
            text = yaml.safe_dump(exp, sort_keys=False)
            from mammosynth.train import _write_atomic

            _write_atomic(Path(args.emit_katib), text)
            print(f"wrote Katib Experiment {args.name!r} ({n_trials} trials) to {args.emit_katib}")
            return 0
        if not args.data:
            raise ValueError("give --data <prepared set> to search, or --emit-katib FILE --data-uri URI")
        from mammosynth import storage

        data = os.fspath(storage.localize(args.data))
        result = run_tune(
            data,
            args.out,
            backend=args.backend or t.backend,
            n_trials=n_trials,
            epochs_per_trial=epochs,
            seed=cfg.seed,
            model=model,
            batch_size=cfg.classifier.batch_size,
            timeout_s=t.timeout_s,
            data_uri=args.data_uri or args.data,
            namespace=args.namespace,
            image=args.image,
            algorithm=args.algorithm or t.algorithm,
            parallel_trials=args.parallel_trials,
            gpu=not args.no_gpu,
        )
        print(json.dumps({"best_params": result.best_params, "best_value": result.best_value}))
    except (FileNotFoundError, ValueError) as exc:
        print(f"mammosynth tune: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
