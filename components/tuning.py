"""Hyperparameter search: Katib Experiment in the cluster, Optuna under kfp.local."""

from kfp import dsl
from kfp.dsl import Dataset, Input

from components.image import TRAINER_IMAGE


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def tune(prepared_set: Input[Dataset], preset: str = "embedded", overrides: str = "{}") -> str:
    """Search the classifier's hyperparameters; return the best ones as a JSON object.

    Args:
        prepared_set: training shards (its URI is what Katib trials read in the cluster).
        preset: config preset name; its tune.backend picks Optuna (local) or Katib (cluster).
        overrides: JSON object of config overrides.

    Returns:
        JSON object of the best trial's parameters.
    """
    from mammosynth import study

    return study.tune_step(prepared_set.path, prepared_set.uri, preset=preset, overrides=overrides)
