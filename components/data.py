"""Data components: ingest → split → preprocess."""

from kfp import dsl
from kfp.dsl import Dataset, Input, Markdown, Output

from components.image import TRAINER_IMAGE


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def ingest(
    ingested_set: Output[Dataset],
    eda: Output[Markdown],
    source: str,
    config: str,
    source_digest: str = "",
):
    """Read CBIS-DDSM (or, for source="embedded", the generated phantom) into a de-identified set.

    Args:
        ingested_set: the ingested set (index.csv, images/, rejects.csv, manifest.json).
        eda: Markdown summary of the data (counts, rejects).
        source: a local folder, an s3:// prefix, or "embedded".
        config: this stage's config view (from resolve_config).
        source_digest: the s3:// upload's manifest digest (part of the cache key: a changed upload
            re-runs ingest); empty for other sources.
    """
    from mammosynth import study

    study.ingest_step(source, ingested_set.path, eda.path, config=config, source_digest=source_digest)


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def split(split_set: Output[Dataset], ingested_set: Input[Dataset], config: str):
    """Assign patient-level train/val/test splits (official test split kept).

    Args:
        split_set: the ingested set with a split column, and the split report.
        ingested_set: the ingest step's output.
        config: this stage's config view (from resolve_config).
    """
    from mammosynth import study

    split_set.metadata.update(study.split_step(ingested_set.path, split_set.path, config=config))


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def preprocess(prepared_set: Output[Dataset], split_set: Input[Dataset], config: str):
    """Window, normalise and resize every image into fixed-size training shards.

    Args:
        prepared_set: the training shards (meta.json, one shard set per split).
        split_set: the split step's output.
        config: this stage's config view (from resolve_config).
    """
    from mammosynth import study

    prepared_set.metadata.update(study.preprocess_step(split_set.path, prepared_set.path, config=config))


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def prepare_external(
    external_set: Output[Dataset],
    prepared_set: Input[Dataset],
    config: str,
    external_source: str = "",
):
    """Ingest and preprocess the external test set like the internal one ("" = none: an empty marker set).

    Args:
        external_set: a prepared set with split ``test`` (or the "no external set" marker).
        prepared_set: the internal prepared set (its image size is used; its patients are checked).
        config: this stage's config view (from resolve_config).
        external_source: a folder or s3:// upload in either layout (CBIS-DDSM or labels.csv); "" for none.
    """
    from mammosynth import study

    external_set.metadata.update(
        study.external_step(external_source, prepared_set.path, external_set.path, config=config)
    )
