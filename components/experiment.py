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
    prepared_set: Input[Dataset],
    synthetic_set: Input[Dataset],
    best_params: Input[Artifact],
    arm: str,
    config: str,
):
    """Train one arm over all seeds; every seed is tested on the same real test set.

    Args:
        arm_result: the arm dir (arm.json, seed-<s>/predictions.csv, the first seed's model).
        prepared_set: the real training shards.
        synthetic_set: the synthetic set (used by the synthetic arms).
        best_params: the tune step's best hyperparameters (JSON).
        arm: the arm name (real, real+aug, real+synthetic@r, real+aug+synthetic, tstr).
        config: this stage's config view (from resolve_config, carried by the loop item).
    """
    from mammosynth import study

    arm_result.metadata.update(
        study.train_arm_step(
            prepared_set.path,
            synthetic_set.path,
            arm_result.path,
            arm=arm,
            best_params_path=best_params.path,
            config=config,
        )
    )


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def evaluate(
    evaluation: Output[Artifact],
    metrics: Output[Metrics],
    roc: Output[ClassificationMetrics],
    arm_results: Input[list[Model]],
    config: str,
):
    """Per-arm means, bootstrap CIs and paired tests against the real and real+aug controls.

    Args:
        evaluation: metrics.json and the test predictions of every arm.
        metrics: per-arm AUC and accuracy for the UI.
        roc: ROC curve and confusion matrix of the deployed model.
        arm_results: every train_arm output.
        config: this stage's config view (from resolve_config).
    """
    from mammosynth import study

    summary = study.evaluate_step([a.path for a in arm_results], evaluation.path, config=config)
    for name, value in summary["scalars"].items():
        metrics.log_metric(name, value)
    roc.log_roc_curve(*summary["roc"])
    roc.log_confusion_matrix(*summary["confusion"])


@dsl.component(base_image=TRAINER_IMAGE, install_kfp_package=False)
def select_model(
    final_model: Output[Model],
    arm_results: Input[list[Model]],
    evaluation: Input[Artifact],
    config: str,
    source: str = "embedded",
):
    """The final classifier: the arm with the best mean validation AUC (never chosen on test).

    Args:
        final_model: the classifier (model.keras, model.json with the data source, saved_model/).
        arm_results: every train_arm output.
        evaluation: the evaluate step's output.
        config: this stage's config view (from resolve_config).
        source: the study's data source (recorded in model.json).
    """
    from mammosynth import study

    final_model.metadata.update(
        study.select_model_step(
            [a.path for a in arm_results],
            evaluation.path,
            final_model.path,
            source=source,
            config=config,
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
    config: str,
    source: str = "embedded",
):
    """Write the study report (Markdown + HTML + figures + metrics.json + model/) as one run folder.

    Args:
        run_dir: the run folder (report.md, report.html, metrics.json, figures/, model/, run.json).
        report_html: the HTML report.
        report_md: the Markdown report.
        evaluation: the evaluate step's output.
        report_card: the generator report card.
        final_model: the selected classifier.
        prepared_set: the training shards.
        split_set: the split set (index and split report).
        synthetic_set: the synthetic set.
        config: this stage's config view (the whole config: the report records it).
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
    )
