"""Hyperparameter search: Katib Experiment in the cluster, Optuna under kfp.local."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components.image import TRAINER_IMAGE


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def tune(
    best_params: Output[Artifact],
    prepared_set: Input[Dataset],
    config: str,
    trainer_image: str = "",
    trial_gpu: bool = True,
):
    """Search the classifier's hyperparameters; write the best ones as a JSON object.

    Args:
        best_params: JSON file of the best trial's parameters (metadata carries them too).
        prepared_set: training shards (its URI is what Katib trials read in the cluster).
        config: this stage's config view (from resolve_config); its tune.backend picks Optuna (local)
            or Katib (cluster).
        trainer_image: the image Katib trials run (the pipeline passes the trainer image).
        trial_gpu: Katib trials request a GPU on the GPU pool (off in the CPU-only compile).
    """
    import json

    from mammosynth import study

    params = study.tune_step(
        prepared_set.path,
        prepared_set.uri,
        config=config,
        image=trainer_image,
        gpu=trial_gpu,
    )
    with open(best_params.path, "w") as fh:
        fh.write(params)
    best_params.metadata.update(json.loads(params))
