"""Experiment components: plan arms → train each arm over seeds → evaluate → pick the model → report."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from components.image import TRAINER_IMAGE


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def plan_arms(config: str, arm_config: str) -> list[dict]:
    """The arms the run trains, each with the train_arm config view (one ParallelFor item per arm).

    Args:
        config: this stage's config view (from resolve_config).
        arm_config: the train_arm stage's view, carried in every loop item.

    Returns:
        ``[{"arm": name, "config": train_arm view}, ...]``.
    """
    from mammosynth import study

    return study.arm_tasks(config, arm_config)


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def train_arm(
    arm_result: Output[Model],
    roc: Output[ClassificationMetrics],
    prepared_set: Input[Dataset],
    synthetic_set: Input[Dataset],
    best_params: Input[Artifact],
    external_set: Input[Dataset],
    arm: str,
    config: str,
    source: str = "embedded",
):
    """Train one arm over all seeds; every seed is tested on the same test set (and the external one).

    Args:
        arm_result: the arm dir (per-seed predictions, metrics and the first seed's model).
        roc: this arm's seed-ensemble ROC and confusion matrix on the test set, named after the arm.
        prepared_set: the real shards.
        synthetic_set: the synthetic shards (unused by arms without synthetic data).
        best_params: the tuned hyperparameters (JSON).
        external_set: the external test set (prepare_external; a "none" marker when there is none).
        arm: the arm to train (e.g. ``real+synthetic@1.0``).
        config: this stage's config view (from resolve_config).
        source: the study's data source (names the test set in the ROC: phantom data is called phantom).
    """
    from mammosynth import study, ui_metrics

    arm_result.metadata.update(
        study.train_arm_step(
            prepared_set.path,
            synthetic_set.path,
            arm_result.path,
            arm=arm,
            best_params_path=best_params.path,
            config=config,
            external_dir=external_set.path,
        )
    )
    ui_metrics.log_classification(roc, study.arm_roc_step(arm_result.path, source=source))


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def evaluate(
    evaluation: Output[Dataset],
    metrics: Output[Metrics],
    arm_results: Input[list[Model]],
    config: str,
):
    """Per-arm means, bootstrap CIs and paired tests against the real and real+aug controls.

    Args:
        evaluation: metrics.json, per-case test_predictions.csv and conclusion.md (a Dataset: the tables
            select_model and report read).
        metrics: what the UI shows: per-arm AUC/accuracy, and per matched comparison dAUC, its 95% CIs
            and the Holm-adjusted p.
        arm_results: every arm's dir.
        config: this stage's config view (from resolve_config).
    """
    from mammosynth import study, ui_metrics

    summary = study.evaluate_step([a.path for a in arm_results], evaluation.path, config=config)
    ui_metrics.log_metrics(metrics, summary["scalars"], display_name="dAUC, CIs and Holm p per comparison")


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def select_model(
    final_model: Output[Model],
    roc: Output[ClassificationMetrics],
    arm_results: Input[list[Model]],
    evaluation: Input[Dataset],
    config: str,
    source: str = "embedded",
):
    """The final classifier: the arm with the best mean validation AUC (never chosen on test).

    Args:
        final_model: the deployed model; its model.json records the data source.
        roc: the deployed model's ROC and confusion matrix on the test set, named after its arm and seed.
        arm_results: every arm's dir.
        evaluation: evaluate's output.
        source: the study's data source (the embedded phantom, a folder or s3:// prefix).
        config: this stage's config view (from resolve_config).
    """
    from mammosynth import study, ui_metrics

    final_model.metadata.update(
        study.select_model_step(
            [a.path for a in arm_results],
            evaluation.path,
            final_model.path,
            source=source,
            config=config,
        )
    )
    ui_metrics.log_classification(roc, study.deployed_roc_step([a.path for a in arm_results], source=source))


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def report(
    run_dir: Output[Artifact],
    report_html: Output[HTML],
    report_md: Output[Markdown],
    evaluation: Input[Dataset],
    report_card: Input[Metrics],
    final_model: Input[Model],
    prepared_set: Input[Dataset],
    split_set: Input[Dataset],
    synthetic_set: Input[Dataset],
    external_set: Input[Dataset],
    config: str,
    source: str = "embedded",
):
    """Write the study report (Markdown + HTML + figures + metrics.json + model/) as one run folder.

    Args:
        run_dir: the run folder. A generic Artifact: it is a whole folder (reports, figures, metrics.json,
            model/, run.json) that no single system type (Dataset, Model, HTML, ...) describes.
        report_html: the HTML report, figures embedded as data URIs (the UI shows it as is).
        report_md: the Markdown report, figures embedded as data URIs (the run folder's report.md keeps
            relative links).
        evaluation: evaluate's output.
        report_card: the generator report card.
        final_model: the deployed model.
        prepared_set: the real shards.
        split_set: the patient split.
        synthetic_set: the synthetic shards.
        external_set: the external test set (or the "none" marker).
        config: this stage's config view (from resolve_config).
        source: the study's data source.
    """
    from mammosynth import study

    study.report_step(
        run_dir.path,
        report_md.path,
        report_html.path,
        evaluation=evaluation.path,
        report_card=report_card.path,
        final_model=final_model.path,
        prepared_set=prepared_set.path,
        split_set=split_set.path,
        synthetic_set=synthetic_set.path,
        config=config,
        source=source,
        external_set=external_set.path,
    )
