"""Data components: ingest → split → preprocess."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Output

from components.image import TRAINER_IMAGE


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def ingest(
    ingested_set: Output[Dataset],
    eda: Output[Markdown],
    source: str,
    preset: str = "embedded",
    overrides: str = "{}",
):
    """Read CBIS-DDSM (or, for source="embedded", the generated phantom) into a de-identified set.

    Args:
        ingested_set: the ingested set (index.csv, images/, rejects.csv, manifest.json).
        eda: Markdown summary of the data (counts, rejects).
        source: a local folder, an s3:// prefix, or "embedded".
        preset: config preset name.
        overrides: JSON object of config overrides.
    """
    from mammosynth import study

    study.ingest_step(source, ingested_set.path, eda.path, preset=preset, overrides=overrides)


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def split(
    split_set: Output[Dataset], ingested_set: Input[Dataset], preset: str = "embedded", overrides: str = "{}"
):
    """Assign patient-level train/val/test splits (official test split kept)."""
    from mammosynth.config import load_config
    from mammosynth.data.split import run_split

    cfg = load_config(preset, overrides)
    report = run_split(
        ingested_set.path,
        split_set.path,
        val_fraction=cfg.val_fraction,
        seed=cfg.seed,
        test_fraction=cfg.test_fraction,
    )
    split_set.metadata.update({"seed": cfg.seed, "patients": report.get("patients", {})})


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def preprocess(
    prepared_set: Output[Dataset], split_set: Input[Dataset], preset: str = "embedded", overrides: str = "{}"
):
    """Window, normalise and resize every image into fixed-size training shards."""
    from mammosynth.config import load_config
    from mammosynth.preprocess import run_preprocess

    cfg = load_config(preset, overrides)
    meta = run_preprocess(split_set.path, prepared_set.path, image_size=cfg.image_size)
    prepared_set.metadata.update({"image_size": cfg.image_size, "counts": meta["counts"]})


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def prepare_external(
    external_set: Output[Dataset],
    prepared_set: Input[Dataset],
    external_source: str = "",
    preset: str = "embedded",
    overrides: str = "{}",
):
    """Ingest and preprocess the external test set like the internal one ("" = none: an empty marker set).

    Args:
        external_set: a prepared set with split ``test`` (or the "no external set" marker).
        prepared_set: the internal prepared set (its image size is used; its patients are checked).
        external_source: a folder or s3:// upload in either layout (CBIS-DDSM or labels.csv); "" for none.
        preset: config preset name.
        overrides: JSON object of config overrides.
    """
    from mammosynth import study

    external_set.metadata.update(
        study.external_step(
            external_source, prepared_set.path, external_set.path, preset=preset, overrides=overrides
        )
    )
