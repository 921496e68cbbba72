"""The first step: resolve the run's parameters into one validated config, cut into per-stage views."""

from typing import NamedTuple

from kfp import dsl

from components.image import TRAINER_IMAGE


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def resolve_config(
    source: str,
    preset: str,
    overrides: str,
    seeds: list,
    arms: list,
    synthetic_ratios: list,
    image_size: int,
    classifier: str,
    classifier_epochs: int,
    tune_trials: int,
    gan_kind: str,
    gan_steps: int,
    gan_seeds: int,
) -> NamedTuple(
    "StageViews",
    ingest=str,
    split=str,
    preprocess=str,
    external=str,
    tune=str,
    gan=str,
    synthesize=str,
    card=str,
    plan=str,
    train_arm=str,
    evaluate=str,
    select=str,
    report=str,
    source_digest=str,
):
    """Merge the preset, the typed run parameters and the JSON overrides into one validated config.

    Each output is the JSON view of one stage (only the settings it reads), so a change to one stage's
    settings leaves the other stages' cache keys alone; ``source_digest`` is an ``s3://`` upload's
    manifest digest (ingest's cache key follows the uploaded content).

    Args:
        source: the data source (``embedded``, a folder or an ``s3://`` upload).
        preset: config preset name.
        overrides: JSON object of config fields, applied last.
        seeds: classifier seeds (empty: the preset's).
        arms: arm names (empty: the preset's).
        synthetic_ratios: one real+synthetic@r arm per ratio (empty: none generated).
        image_size: image side in pixels (0: the preset's).
        classifier: classifier name (empty: the preset's).
        classifier_epochs: training epochs per arm and seed (0: the preset's).
        tune_trials: hyperparameter-search trials (0: the preset's).
        gan_kind: generator kind (empty: the preset's).
        gan_steps: GAN training steps (0: the preset's).
        gan_seeds: generators trained (0: the preset's).

    Returns:
        One view per stage plus ``source_digest``, in the order of `mammosynth.config.STAGE_FIELDS`
        (KFP reads a NamedTuple's outputs by position; tests/test_pipeline.py checks the order).
    """
    from mammosynth import study

    out = study.resolve_config_step(
        source,
        preset=preset,
        overrides=overrides,
        seeds=seeds,
        arms=arms,
        synthetic_ratios=synthetic_ratios,
        image_size=image_size,
        classifier=classifier,
        classifier_epochs=classifier_epochs,
        tune_trials=tune_trials,
        gan_kind=gan_kind,
        gan_steps=gan_steps,
        gan_seeds=gan_seeds,
    )
    from collections import namedtuple

    fields = [*study.STAGE_FIELDS, "source_digest"]
    return namedtuple("StageViews", fields)(**{name: out[name] for name in fields})
