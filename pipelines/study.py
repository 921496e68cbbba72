"""The mammosynth study as one KFP v2 pipeline.

The same function runs on a laptop through `kfp.local` (`make run`) and compiles for the Kubeflow UI
(`make compile`). Platform settings (GPUs, node pool, Secrets) are attached with kfp-kubernetes helpers;
`kfp.local` ignores them.
"""

import os

from kfp import dsl, kubernetes

from components import (
    assess_generator,
    deploy,
    evaluate,
    ingest,
    plan_arms,
    prepare_external,
    preprocess,
    report,
    select_model,
    split,
    synthesize,
    train_arm,
    train_gan,
    tune,
)
from components.image import TRAINER_IMAGE

PIPELINE_NAME = "mammosynth-study"
# Cluster wiring, fixed at compile time (override with environment variables when compiling).
GPU_NODE_LABEL = os.environ.get("MAMMOSYNTH_GPU_NODE_LABEL", "nvidia.com/gpu.present")
GPU_NODE_VALUE = os.environ.get("MAMMOSYNTH_GPU_NODE_VALUE", "true")
GPU_TOLERATION_KEY = os.environ.get("MAMMOSYNTH_GPU_TOLERATION_KEY", "nvidia.com/gpu")
STORAGE_SECRET = os.environ.get("MAMMOSYNTH_STORAGE_SECRET", "mammosynth-minio")
STORAGE_CONFIG_MAP = os.environ.get("MAMMOSYNTH_STORAGE_CONFIG_MAP", "mammosynth-storage")
ARM_PARALLELISM = int(os.environ.get("MAMMOSYNTH_ARM_PARALLELISM", "8"))


def _storage_env(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """MinIO credentials from the Secret, endpoint from the ConfigMap; nothing secret in the spec."""
    kubernetes.use_secret_as_env(
        task,
        secret_name=STORAGE_SECRET,
        secret_key_to_env={
            "AWS_ACCESS_KEY_ID": "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY": "AWS_SECRET_ACCESS_KEY",
        },
    )
    kubernetes.use_config_map_as_env(
        task,
        config_map_name=STORAGE_CONFIG_MAP,
        config_map_key_to_env={"S3_ENDPOINT": "S3_ENDPOINT", "S3_USE_HTTPS": "S3_USE_HTTPS"},
    )
    return task


def _cpu(task: dsl.PipelineTask, cpu: str = "2", memory: str = "8G") -> dsl.PipelineTask:
    task.set_cpu_request(cpu).set_memory_request(memory).set_memory_limit(memory)
    return _storage_env(task)


def gpu_enabled() -> bool:
    """Whether this compile places the GPU steps on a GPU pool (``MAMMOSYNTH_GPU=1``, `make compile-gpu`).

    Off by default so `make compile` gives a YAML that schedules on a CPU-only cluster.
    """
    return os.environ.get("MAMMOSYNTH_GPU", "0").strip().lower() in {"1", "true", "yes"}


def _gpu(task: dsl.PipelineTask, gpus: int = 1) -> dsl.PipelineTask:
    """A GPU step: retried (pod preemption, node loss); on the GPU pool when `gpu_enabled()`.

    With the GPU off (the default compile) the step runs on CPU nodes with no GPU request, node selector
    or toleration. With it on: GPU limit, node selector, toleration.
    """
    task.set_retry(num_retries=2, backoff_duration="60s")
    if not gpu_enabled():
        return _cpu(task, cpu="4", memory="16G")
    task.set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(gpus)
    task.set_cpu_request("4").set_memory_request("24G").set_memory_limit("48G")
    kubernetes.add_node_selector(task, label_key=GPU_NODE_LABEL, label_value=GPU_NODE_VALUE)
    kubernetes.add_toleration(task, key=GPU_TOLERATION_KEY, operator="Exists", effect="NoSchedule")
    return _storage_env(task)


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Does conditional-GAN synthetic data improve a CBIS-DDSM mass classifier? "
    "Patient-level split, several seeds per arm, CIs and paired tests.",
)
def study_pipeline(
    source: str = "embedded",
    preset: str = "embedded",
    overrides: str = "{}",
    model_uri: str = "",
    namespace: str = "mammosynth",
    synthetic_publish_uri: str = "",
    synthetic_set_uri: str = "",
    external_source: str = "",
) -> dsl.Artifact:
    """Run the whole study.

    Args:
        source: CBIS-DDSM location (local folder or s3://bucket/prefix) or "embedded" for the phantom.
        preset: config preset (embedded, cbis-ddsm, tiny).
        overrides: JSON object of config overrides, e.g. '{"seeds": [0, 1, 2]}'.
        model_uri: where the deploy step exports the final classifier (s3://...); empty skips export.
        namespace: Kubernetes namespace of the InferenceService.
        synthetic_publish_uri: publish the synthetic set there (s3://..., content-addressed, with lineage).
        synthetic_set_uri: reuse this published synthetic set; the GAN is then not trained.
        external_source: an external test set (folder or s3:// upload, CBIS-DDSM or labels.csv layout) that
            every arm's seed models also predict; metrics.json gets an ``external`` block. "" = none.

    Returns:
        The run folder (report.md, report.html, metrics.json, figures, model/).
    """
    # Step 1: ingest CBIS-DDSM (or the embedded phantom), de-identified, rejects written.
    ingest_task = _cpu(ingest(source=source, preset=preset, overrides=overrides)).set_display_name("Ingest")
    # Step 2: patient-level split.
    split_task = _cpu(
        split(ingested_set=ingest_task.outputs["ingested_set"], preset=preset, overrides=overrides)
    )
    split_task.set_display_name("Patient split")
    # Step 3: preprocess into training shards.
    prep_task = _cpu(
        preprocess(split_set=split_task.outputs["split_set"], preset=preset, overrides=overrides)
    )
    prep_task.set_display_name("Preprocess")
    prepared = prep_task.outputs["prepared_set"]
    # Step 3b: the external test set, ingested and preprocessed the same way (an empty marker when none).
    external_task = _cpu(
        prepare_external(
            prepared_set=prepared, external_source=external_source, preset=preset, overrides=overrides
        )
    )
    external_task.set_display_name("External test set")
    external = external_task.outputs["external_set"]
    # Step 4: hyperparameter search (Katib in the cluster, Optuna locally).
    tune_task = _cpu(
        tune(
            prepared_set=prepared,
            preset=preset,
            overrides=overrides,
            trainer_image=TRAINER_IMAGE,
            trial_gpu=gpu_enabled(),
        )
    )
    tune_task.set_display_name("Tune hyperparameters")
    # Step 5: conditional GAN on the real training split (skipped when a published set is reused).
    gan_task = _gpu(
        train_gan(
            prepared_set=prepared, preset=preset, overrides=overrides, synthetic_set_uri=synthetic_set_uri
        )
    )
    gan_task.set_display_name("Train GAN")
    # Step 6: synthetic set per class (published with lineage, or reused), then the report card.
    synth_task = _cpu(
        synthesize(
            generator=gan_task.outputs["generator"],
            prepared_set=prepared,
            preset=preset,
            overrides=overrides,
            synthetic_set_uri=synthetic_set_uri,
            publish_uri=synthetic_publish_uri,
        )
    )
    synth_task.set_display_name("Synthesize")
    card_task = _cpu(
        assess_generator(
            generator=gan_task.outputs["generator"],
            prepared_set=prepared,
            synthetic_set=synth_task.outputs["synthetic_set"],
            preset=preset,
            overrides=overrides,
        )
    )
    card_task.set_display_name("Generator report card")
    # Step 7: every arm over every seed, in parallel on the GPU pool. (best_params travels as an
    # artifact: kfp.local 2.17 resolves an outer task's *parameter* output inside ParallelFor to the
    # loop item.)
    plan_task = plan_arms(preset=preset, overrides=overrides).set_display_name("Plan arms")
    with dsl.ParallelFor(plan_task.output, name="Arms x seeds", parallelism=ARM_PARALLELISM) as arm:
        arm_task = _gpu(
            train_arm(
                prepared_set=prepared,
                synthetic_set=synth_task.outputs["synthetic_set"],
                arm=arm,
                best_params=tune_task.outputs["best_params"],
                external_set=external,
                preset=preset,
                overrides=overrides,
            )
        )
        arm_task.set_display_name("Train arm")
    # Step 8: statistics over arms and seeds.
    eval_task = _cpu(
        evaluate(
            arm_results=dsl.Collected(arm_task.outputs["arm_result"]), preset=preset, overrides=overrides
        )
    )
    eval_task.set_display_name("Evaluate")
    # Step 9: the final classifier, chosen on validation AUC.
    select_task = _cpu(
        select_model(
            arm_results=dsl.Collected(arm_task.outputs["arm_result"]),
            evaluation=eval_task.outputs["evaluation"],
            source=source,
            preset=preset,
            overrides=overrides,
        )
    )
    select_task.set_display_name("Select model")
    # Step 10: the report.
    report_task = _cpu(
        report(
            evaluation=eval_task.outputs["evaluation"],
            report_card=card_task.outputs["report_card"],
            final_model=select_task.outputs["final_model"],
            prepared_set=prepared,
            split_set=split_task.outputs["split_set"],
            synthetic_set=synth_task.outputs["synthetic_set"],
            external_set=external,
            preset=preset,
            overrides=overrides,
            source=source,
        )
    )
    report_task.set_display_name("Report")
    # Step 11: serve it (export + InferenceService; a printed plan outside a cluster).
    deploy_task = _cpu(
        deploy(final_model=select_task.outputs["final_model"], model_uri=model_uri, namespace=namespace),
        cpu="1",
        memory="2G",
    )
    # A side effect (export + InferenceService): never answered from the cache.
    deploy_task.set_display_name("Deploy").set_caching_options(False)
    return report_task.outputs["run_dir"]
