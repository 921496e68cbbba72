"""Generative components: train the conditional GAN → synthesize a set → assess the generator."""

from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model, Output

from components.image import TRAINER_IMAGE


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def train_gan(
    generator: Output[Model],
    prepared_set: Input[Dataset],
    preset: str = "embedded",
    overrides: str = "{}",
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
    """
    from mammosynth import study

    generator.metadata.update(
        study.train_gan_step(
            prepared_set.path,
            generator.path,
            preset=preset,
            overrides=overrides,
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
    preset: str = "embedded",
    overrides: str = "{}",
    synthetic_set_uri: str = "",
    publish_uri: str = "",
):
    """Sample a synthetic training set per class, sized for the largest synthetic:real ratio.

    ``publish_uri`` also publishes it (content-addressed, with lineage) for later runs;
    ``synthetic_set_uri`` reuses such a published set instead of sampling.
    """
    from mammosynth import study

    synthetic_set.metadata.update(
        study.synthesize_step(
            generator.path,
            prepared_set.path,
            synthetic_set.path,
            preset=preset,
            overrides=overrides,
            reuse_uri=synthetic_set_uri,
            publish_uri=publish_uri,
        )
    )


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def assess_generator(
    report_card: Output[Artifact],
    generator: Input[Model],
    prepared_set: Input[Dataset],
    synthetic_set: Input[Dataset],
    preset: str = "embedded",
    overrides: str = "{}",
):
    """Generator report card: FID/KID with floor, precision/recall, memorisation, diversity."""
    from mammosynth import study

    report_card.metadata.update(
        study.assess_generator_step(
            prepared_set.path, synthetic_set.path, report_card.path, preset=preset, overrides=overrides
        )
    )
