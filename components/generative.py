"""Generative components: train the conditional GAN → synthesize a set → assess the generator."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components.image import TRAINER_IMAGE


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def train_gan(
    generator: Output[Model],
    prepared_set: Input[Dataset],
    config: str,
    synthetic_set_uri: str = "",
    checkpoint_uri: str = "",
    run_key: str = "",
):
    """Train the conditional GAN on the real training split, checkpointing as it goes.

    With ``synthetic_set_uri`` (a published synthetic set) nothing is trained: the run reuses that set.
    With ``checkpoint_uri`` (s3://bucket/prefix or a mounted PVC path) checkpoints are mirrored to
    ``<checkpoint_uri>/<run_key>/gan-seed-<k>/`` and a retried pod resumes from there; ``run_key``
    must stay the same across retries (the pipeline passes the KFP run ID). Empty: as before, the
    checkpoints live only in the output artifact, which KFP uploads on success.

    Args:
        generator: the trained generator(s) with checkpoints, losses and samples.
        prepared_set: the training shards (the real training split is what the GAN sees).
        config: this stage's config view (from resolve_config).
        synthetic_set_uri: a published synthetic set to reuse instead of training.
        checkpoint_uri: durable checkpoint location (s3://... or a mounted PVC path); empty = none.
        run_key: stable across retries of this task (the KFP run ID), names the checkpoint folder.
    """
    from mammosynth import study

    generator.metadata.update(
        study.train_gan_step(
            prepared_set.path,
            generator.path,
            config=config,
            reuse_uri=synthetic_set_uri,
            checkpoint_uri=checkpoint_uri,
            run_key=run_key,
        )
    )


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def synthesize(
    synthetic_set: Output[Dataset],
    generator: Input[Model],
    prepared_set: Input[Dataset],
    config: str,
    synthetic_set_uri: str = "",
    publish_uri: str = "",
):
    """Sample a synthetic training set per class, sized for the largest synthetic:real ratio.

    Args:
        synthetic_set: the synthetic set (one per generator).
        generator: the train_gan step's output.
        prepared_set: the training shards (sizes the set; lineage of the training patients).
        config: this stage's config view (from resolve_config).
        synthetic_set_uri: reuse this published set instead of sampling.
        publish_uri: also publish the set there (content-addressed, with lineage) for later runs.
    """
    from mammosynth import study

    synthetic_set.metadata.update(
        study.synthesize_step(
            generator.path,
            prepared_set.path,
            synthetic_set.path,
            config=config,
            reuse_uri=synthetic_set_uri,
            publish_uri=publish_uri,
        )
    )


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def assess_generator(
    report_card: Output[Metrics],
    generator: Input[Model],
    prepared_set: Input[Dataset],
    synthetic_set: Input[Dataset],
    config: str,
):
    """Generator report card: FID/KID with floor, precision/recall, memorisation, diversity.

    Args:
        report_card: the card's folder (JSON + figures); a Metrics artifact whose metadata holds the card's
            scalars, which the UI shows as a table.
        generator: the trained GAN.
        prepared_set: the real shards (the validation split is the held-out real set).
        synthetic_set: the synthetic shards.
        config: this stage's config view (from resolve_config).
    """
    from mammosynth import study

    report_card.metadata.update(
        study.assess_generator_step(prepared_set.path, synthetic_set.path, report_card.path, config=config)
    )
