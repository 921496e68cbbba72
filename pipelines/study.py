"""The mammosynth study as one KFP v2 pipeline.

The same function runs on a laptop through `kfp.local` (`make run`) and compiles for the Kubeflow UI
(`make compile`). Platform settings (GPUs, node pool, Secrets) are attached with kfp-kubernetes helpers;
`kfp.local` ignores them.
"""

import os
from typing import Any

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
    resolve_config,
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
# A PersistentVolumeClaim for durable GAN checkpoints, mounted into the GAN step when set at compile time
# (then run with gan_checkpoint_uri=<the mount path>); empty: none mounted (use an s3:// gan_checkpoint_uri).
GAN_CHECKPOINT_PVC = os.environ.get("MAMMOSYNTH_GAN_CHECKPOINT_PVC", "")
GAN_CHECKPOINT_MOUNT = os.environ.get("MAMMOSYNTH_GAN_CHECKPOINT_MOUNT", "/mnt/gan-checkpoints")


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


def _resolve_stage(**run_parameters: Any) -> Any:
    """Step 0: the run parameters resolved into one config, cut into one view per stage.

    Each stage's cache key sees only its own settings. Always re-run, so an s3:// source's manifest digest
    is read fresh. Returns the resolve task's outputs (the views, by stage name).
    """
    # Step 0: one validated config, cut into one view per stage.
    resolved = _cpu(resolve_config(**run_parameters), cpu="500m", memory="1G")
    resolved.set_display_name("Resolve config").set_caching_options(False)
    return resolved.outputs


def _data_stages(view, source: str, external_source: str) -> dict[str, Any]:
    """Steps 1-3: ingest, patient split, preprocess, the external test set.

    Returns the sets by the report's input names: ``split_set``, ``prepared_set``, ``external_set``.
    """
    # Step 1: ingest CBIS-DDSM (or the embedded phantom), de-identified, rejects written.
    ingest_task = _cpu(
        ingest(source=source, config=view["ingest"], source_digest=view["source_digest"])
    ).set_display_name("Ingest")
    # Step 2: patient-level split.
    split_task = _cpu(split(ingested_set=ingest_task.outputs["ingested_set"], config=view["split"]))
    split_task.set_display_name("Patient split")
    # Step 3: preprocess into training shards.
    prep_task = _cpu(preprocess(split_set=split_task.outputs["split_set"], config=view["preprocess"]))
    prep_task.set_display_name("Preprocess")
    prepared = prep_task.outputs["prepared_set"]
    # Step 3b: the external test set, ingested and preprocessed the same way (an empty marker when none).
    external_task = _cpu(
        prepare_external(prepared_set=prepared, config=view["external"], external_source=external_source)
    )
    external_task.set_display_name("External test set")
    return {
        "prepared_set": prepared,
        "split_set": split_task.outputs["split_set"],
        "external_set": external_task.outputs["external_set"],
    }


def _generative_stages(
    view, prepared, synthetic_set_uri, synthetic_publish_uri, gan_checkpoint_uri
) -> tuple[Any, dsl.PipelineTask]:
    """Steps 5-6: train the GAN, synthesize, the report card. Returns the synthetic set and the card task."""
    # Step 5: conditional GAN on the real training split (skipped when a published set is reused).
    gan_task = _gpu(
        train_gan(
            prepared_set=prepared,
            config=view["gan"],
            synthetic_set_uri=synthetic_set_uri,
            checkpoint_uri=gan_checkpoint_uri,
            # The run ID stays the same when set_retry restarts the task (the task ID need not).
            run_key=dsl.PIPELINE_JOB_ID_PLACEHOLDER,
        )
    )
    gan_task.set_display_name("Train GAN")
    if GAN_CHECKPOINT_PVC:  # checkpoints on a volume that outlives the pod (kfp-kubernetes)
        kubernetes.mount_pvc(gan_task, pvc_name=GAN_CHECKPOINT_PVC, mount_path=GAN_CHECKPOINT_MOUNT)
    # Step 6: synthetic set per class (published with lineage, or reused), then the report card.
    synth_task = _cpu(
        synthesize(
            generator=gan_task.outputs["generator"],
            prepared_set=prepared,
            config=view["synthesize"],
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
            config=view["card"],
        )
    )
    card_task.set_display_name("Generator report card")
    return synth_task.outputs["synthetic_set"], card_task


def _training_stages(view, sets: dict[str, Any], source: str) -> dsl.PipelineTask:
    """Steps 4 and 7: the hyperparameter search, then every arm over every seed in parallel.

    ``sets`` holds the prepared, synthetic and external sets. Returns the train_arm task.
    """
    # Step 4: hyperparameter search (Katib in the cluster, Optuna locally).
    tune_task = _cpu(
        tune(
            prepared_set=sets["prepared_set"],
            config=view["tune"],
            trainer_image=TRAINER_IMAGE,
            trial_gpu=gpu_enabled(),
        )
    )
    tune_task.set_display_name("Tune hyperparameters")
    # Step 7: every arm over every seed, in parallel on the GPU pool. kfp.local 2.17 resolves an outer
    # task's *parameter* output inside ParallelFor to the loop item, so best_params travels as an
    # artifact and the train_arm view inside each loop item ({"arm", "config"}).
    plan_task = plan_arms(config=view["plan"], arm_config=view["train_arm"]).set_display_name("Plan arms")
    with dsl.ParallelFor(plan_task.output, name="Arms x seeds", parallelism=ARM_PARALLELISM) as item:
        arm_task = _gpu(
            train_arm(
                prepared_set=sets["prepared_set"],
                synthetic_set=sets["synthetic_set"],
                arm=item.arm,
                best_params=tune_task.outputs["best_params"],
                external_set=sets["external_set"],
                config=item.config,
                source=source,
            )
        )
        arm_task.set_display_name("Train arm")
    return arm_task


def _result_stages(view, arm_task, card_task, sets: dict, source, model_uri, namespace) -> dsl.PipelineTask:
    """Steps 8-11: evaluate, select the model, report, deploy. Returns the report task."""
    # Step 8: statistics over arms and seeds.
    eval_task = _cpu(
        evaluate(arm_results=dsl.Collected(arm_task.outputs["arm_result"]), config=view["evaluate"])
    )
    eval_task.set_display_name("Evaluate")
    # Step 9: the final classifier, chosen on validation AUC.
    select_task = _cpu(
        select_model(
            arm_results=dsl.Collected(arm_task.outputs["arm_result"]),
            evaluation=eval_task.outputs["evaluation"],
            config=view["select"],
            source=source,
        )
    )
    select_task.set_display_name("Select model")
    # Step 10: the report.
    report_task = _cpu(
        report(
            evaluation=eval_task.outputs["evaluation"],
            report_card=card_task.outputs["report_card"],
            final_model=select_task.outputs["final_model"],
            **sets,
            config=view["report"],
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
    return report_task


@dsl.pipeline(
    name=PIPELINE_NAME,
    description="Does conditional-GAN synthetic data improve a CBIS-DDSM mass classifier? "
    "Patient-level split, several seeds per arm, CIs and paired tests.",
)
def study_pipeline(
    source: str = "embedded",
    preset: str = "embedded",
    seeds: list = [],  # noqa: B006  (KFP needs a literal default; [] = the preset's)
    arms: list = [],  # noqa: B006
    synthetic_ratios: list = [],  # noqa: B006
    image_size: int = 0,
    classifier: str = "",
    classifier_epochs: int = 0,
    tune_trials: int = 0,
    gan_kind: str = "",
    gan_steps: int = 0,
    gan_seeds: int = 0,
    overrides: str = "{}",
    model_uri: str = "",
    namespace: str = "mammosynth",
    synthetic_publish_uri: str = "",
    synthetic_set_uri: str = "",
    gan_checkpoint_uri: str = "",
    external_source: str = "",
) -> dsl.Artifact:
    """Run the whole study. Empty list, 0 or "" means: use the preset's value.

    Args:
        source: CBIS-DDSM location (local folder or s3://bucket/prefix) or "embedded" for the phantom data.
        preset: config preset: tiny, embedded (phantom, minutes on a CPU) or cbis-ddsm (the cluster study).
        seeds: classifier seeds, one model per arm and seed, e.g. [0, 1, 2, 3, 4]; [] = the preset's.
        arms: arms to train: real, real+aug, real+synthetic[@ratio], real+aug+synthetic[@ratio], tstr;
            [] = the preset's. real always runs (every comparison is against it).
        synthetic_ratios: synthetic:real ratios, e.g. [0.25, 1.0]: the real+synthetic arms become one
            real+synthetic@r per ratio (other arms kept); [] = arms unchanged.
        image_size: image side in pixels (16-2048); 0 = the preset's (64 embedded, 224 cbis-ddsm).
        classifier: simple_cnn, tuned_cnn, vgg16, inception_resnet_v2 or efficientnet_b0; "" = the preset's.
        classifier_epochs: training epochs per arm and seed; 0 = the preset's.
        tune_trials: hyperparameter-search trials (Katib in the cluster); 0 = the preset's.
        gan_kind: generator kind: stable-cgan, seed-cgan or cvae; "" = the preset's.
        gan_steps: GAN training steps per generator; 0 = the preset's.
        gan_seeds: generators trained (classifier seed k uses generator k mod gan_seeds); 0 = the preset's.
        overrides: advanced: JSON object of any config fields, applied last (wins over the typed
            parameters), e.g. '{"gan": {"latent_dim": 32}}'.
        model_uri: where the deploy step exports the final classifier (s3://...); empty skips export.
        namespace: Kubernetes namespace of the InferenceService.
        synthetic_publish_uri: publish the synthetic set there (s3://..., content-addressed, with lineage).
        synthetic_set_uri: reuse this published synthetic set; the GAN is then not trained.
        gan_checkpoint_uri: durable GAN checkpoints (s3://bucket/prefix, or a PVC path mounted in the
            GAN pod), kept per run ID so a retried (preempted) GAN pod resumes instead of starting
            over; empty keeps them only in the output artifact, which KFP uploads on success.
        external_source: an external test set (folder or s3:// upload, CBIS-DDSM or labels.csv layout) that
            every arm's seed models also predict; metrics.json gets an ``external`` block. "" = none.

    Returns:
        The run folder (report.md, report.html, metrics.json, figures, model/).
    """
    view = _resolve_stage(
        source=source,
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
    sets = _data_stages(view, source, external_source)
    sets["synthetic_set"], card_task = _generative_stages(
        view, sets["prepared_set"], synthetic_set_uri, synthetic_publish_uri, gan_checkpoint_uri
    )
    arm_task = _training_stages(view, sets, source)
    report_task = _result_stages(view, arm_task, card_task, sets, source, model_uri, namespace)
    return report_task.outputs["run_dir"]
