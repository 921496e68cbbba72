"""Experiment components: plan arms → train each arm over seeds → evaluate → pick the model → report."""

from kfp import dsl
from kfp.dsl import HTML, Artifact, ClassificationMetrics, Dataset, Input, Markdown, Metrics, Model, Output

from components.image import TRAINER_IMAGE


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def plan_arms(preset: str = "embedded", overrides: str = "{}") -> list[str]:
    """The arms the preset runs (each fans out to its own training task)."""
    from mammosynth import study

    return study.plan_arms(preset=preset, overrides=overrides)


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def train_arm(
    arm_result: Output[Model],
    prepared_set: Input[Dataset],
    synthetic_set: Input[Dataset],
    best_params: Input[Artifact],
    external_set: Input[Dataset],
    arm: str,
    preset: str = "embedded",
    overrides: str = "{}",
):
    """Train one arm over all seeds; every seed is tested on the same real test set (and the external one)."""
    from mammosynth import study

    arm_result.metadata.update(
        study.train_arm_step(
            prepared_set.path,
            synthetic_set.path,
            arm_result.path,
            arm=arm,
            best_params_path=best_params.path,
            preset=preset,
            overrides=overrides,
            external_dir=external_set.path,
        )
    )


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def evaluate(
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    roc: Output[ClassificationMetrics],
    arm_results: Input[list[Model]],
    preset: str = "embedded",
    overrides: str = "{}",
):
    """Per-arm means, bootstrap CIs and paired tests against the real and real+aug controls."""
    from mammosynth import study

    summary = study.evaluate_step(
        [a.path for a in arm_results], evaluation.path, preset=preset, overrides=overrides
    )
    for name, value in summary["scalars"].items():
        metrics.log_metric(name, value)
    roc.log_roc_curve(*summary["roc"])
    roc.log_confusion_matrix(*summary["confusion"])


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def select_model(
    final_model: Output[Model],
    arm_results: Input[list[Model]],
    evaluation: Input[Artifact],
    source: str = "embedded",
    preset: str = "embedded",
    overrides: str = "{}",
):
    """The final classifier: the arm with the best mean validation AUC (never chosen on test);
    its model.json records the data source."""
    from mammosynth import study

    final_model.metadata.update(
        study.select_model_step(
            [a.path for a in arm_results],
            evaluation.path,
            final_model.path,
            source=source,
            preset=preset,
            overrides=overrides,
        )
    )


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def report(
    run_dir: Output[Artifact],
    report_html: Output[HTML],
    report_md: Output[Markdown],
    evaluation: Input[Artifact],
    report_card: Input[Artifact],
    final_model: Input[Model],
    prepared_set: Input[Dataset],
    split_set: Input[Dataset],
    synthetic_set: Input[Dataset],
    external_set: Input[Dataset],
    preset: str = "embedded",
    overrides: str = "{}",
    source: str = "embedded",
):
    """Write the study report (Markdown + HTML + figures + metrics.json + model/) as one run folder."""
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
        preset=preset,
        overrides=overrides,
        source=source,
        external_set=external_set.path,
    )
