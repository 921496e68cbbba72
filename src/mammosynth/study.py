"""Stage glue for the study pipeline: config in, core-function keywords out.

Each KFP component makes exactly one call into this module (plus, where it logs what the Kubeflow UI
shows, one `mammosynth.ui_metrics` call), so what a component does can be run and tested without kfp.
`resolve_config_step` turns the run's parameters into one config view per stage
(`mammosynth.config.stage_view`); each ``*_step`` takes its view as ``config=`` (or, for the CLI and
tests, ``preset=``/``overrides=``, which are resolved and cut to the same view), calls the stage's core
function and returns the small dict the component records as artifact metadata. A step reading a
setting outside its view raises AttributeError (`mammosynth.config.StageConfig`).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
from pathlib import Path

from mammosynth import arms as armlib
from mammosynth import storage
from mammosynth.arms import parse_arm
from mammosynth.config import (
    CLASS_NAMES,
    STAGE_FIELDS,
    StageConfig,
    StudyConfig,
    from_stage_view,
    load_config,
    preset_diff,
    resolve,
    stage_view,
)

log = logging.getLogger(__name__)


def _cfg(stage: str, config: str, preset: str, overrides: str | dict | None) -> StageConfig:
    """The stage's config: its view text ``config``, else the same view of ``preset`` + ``overrides``."""
    if config:
        return from_stage_view(config, stage)
    return from_stage_view(stage_view(load_config(preset, overrides), stage), stage)


# Step 0 ---------------------------------------------------------------------------------------------
def resolve_config_step(
    source: str, *, preset: str = "embedded", overrides: str | dict | None = None, **params
) -> dict[str, str]:
    """Resolve the run's config once and cut it into one view per stage.

    Args:
        source: the study's data source; for an ``s3://`` upload its manifest digest is read here so
            that ingest's cache key follows the uploaded content.
        preset: config preset.
        overrides: JSON object of config fields, applied last.
        **params: the typed run parameters (`mammosynth.config.TYPED_PARAMETERS`, ``synthetic_ratios``).

    Returns:
        ``{stage: view JSON}`` for every stage of `STAGE_FIELDS`, plus ``source_digest`` (``""`` for
        the embedded phantom and local folders).

    Raises:
        ValueError: a parameter or override the config refuses (one line).
        StorageError: an ``s3://`` source without a usable manifest.
    """
    cfg = resolve(preset, overrides, **params)
    views = {stage: stage_view(cfg, stage) for stage in STAGE_FIELDS}
    digest = storage.source_digest(source) if storage.is_remote(source) else ""
    log.info(
        "resolve_config: preset %s, changed from the preset: %s", cfg.preset, json.dumps(preset_diff(cfg))
    )
    if digest:
        log.info("resolve_config: source manifest digest %s", digest)
    return {**views, "source_digest": digest}


# Step 1 ---------------------------------------------------------------------------------------------
def _local_source(source: str, cfg: StudyConfig, tmp: Path) -> Path:
    """A local folder for ``source``.

    The generated phantom for "embedded", a local folder as it is, or an s3:// upload fetched (verified)
    into ``tmp``.
    """
    if source == "embedded":
        from mammosynth.data import phantom

        log.info(
            "ingest: generating the embedded phantom (%d patients, seed %d)", cfg.phantom.n_patients, cfg.seed
        )
        return phantom.generate(
            tmp / "phantom", n_patients=cfg.phantom.n_patients, seed=cfg.seed, crop_size=cfg.phantom.crop_size
        )
    return storage.localize_source(source, cache_dir=tmp / "cache")


def ingest_step(
    source: str,
    out_dir: str,
    eda_path: str | None = None,
    *,
    config: str = "",
    source_digest: str = "",
    preset: str = "embedded",
    overrides: str | dict | None = None,
) -> dict:
    """Ingest ``source`` (a folder, an s3:// prefix, or "embedded" for the phantom).

    ``source_digest`` (from `resolve_config_step`) is the upload's manifest digest the run was keyed
    on; an upload that changed since then is refused rather than ingested under the old key.
    """
    from mammosynth.ingest import run_ingest

    cfg = _cfg("ingest", config, preset, overrides)
    if source_digest and storage.is_remote(source):
        now = storage.source_digest(source)
        if now != source_digest:
            raise ValueError(
                f"source {source} changed since the run resolved its config (manifest digest "
                f"{source_digest[:12]}…, now {now[:12]}…): start the run again"
            )
    with tempfile.TemporaryDirectory(prefix="mammosynth-source-") as tmp:
        local = _local_source(source, cfg, Path(tmp))
        result = run_ingest(local, out_dir, abnormality=cfg.abnormality, image_kind=cfg.image_kind)
    summary = Path(out_dir) / "eda" / "summary.md"
    if eda_path:
        Path(eda_path).parent.mkdir(parents=True, exist_ok=True)
        text = (
            summary.read_text()
            if summary.exists()
            else f"# Ingest\n\n```\n{json.dumps(result, indent=2, default=str)}\n```\n"
        )
        Path(eda_path).write_text(text)
    return result


# Steps 2–3 ------------------------------------------------------------------------------------------
def split_step(
    ingested_dir: str, out_dir: str, *, config: str = "", preset: str = "embedded", overrides=None
) -> dict:
    """Patient-level train/val/test split (official test split kept); returns the artifact metadata."""
    from mammosynth.data.split import run_split

    cfg = _cfg("split", config, preset, overrides)
    report = run_split(
        ingested_dir, out_dir, val_fraction=cfg.val_fraction, seed=cfg.seed, test_fraction=cfg.test_fraction
    )
    return {"seed": cfg.seed, "patients": report.get("patients", {})}


def preprocess_step(
    split_dir: str, out_dir: str, *, config: str = "", preset: str = "embedded", overrides=None
) -> dict:
    """Window, normalise and resize into fixed-size shards; returns the artifact metadata."""
    from mammosynth.preprocess import run_preprocess

    cfg = _cfg("preprocess", config, preset, overrides)
    meta = run_preprocess(split_dir, out_dir, image_size=cfg.image_size)
    return {"image_size": cfg.image_size, "counts": meta["counts"]}


def external_step(
    external_source: str,
    prepared_dir: str,
    out_dir: str,
    *,
    config: str = "",
    preset: str = "embedded",
    overrides: str | dict | None = None,
) -> dict:
    """Prepare the external test set (`mammosynth.external.prepare_external`), or mark that there is none.

    ``external_source``: a folder or s3:// upload in either layout (CBIS-DDSM or ``labels.csv``); "" = none.
    """
    from mammosynth import external

    if not external_source:
        external.write_none(out_dir)
        return {"external": False}
    if external_source == "embedded":
        raise ValueError(
            "external_source 'embedded' would be the internal phantom itself; "
            "pass another folder or s3:// upload"
        )
    cfg = _cfg("external", config, preset, overrides)
    with tempfile.TemporaryDirectory(prefix="mammosynth-external-") as tmp:
        local = _local_source(external_source, cfg, Path(tmp))
        meta = external.prepare_external(
            local,
            out_dir,
            prepared_dir=prepared_dir,
            abnormality=cfg.abnormality,
            image_kind=cfg.image_kind,
            label=external_source,
        )
    record = meta[external.EXTERNAL_KEY]
    return {"external": True, "n_test": sum(meta["counts"]["test"].values()), "rejected": record["rejected"]}


# Step 4 ---------------------------------------------------------------------------------------------
def tune_step(
    prepared_dir: str,
    prepared_uri: str = "",
    *,
    config: str = "",
    preset: str = "embedded",
    overrides: str | dict | None = None,
    image: str | None = None,
    gpu: bool = True,
) -> str:
    """Hyperparameter search; returns the best parameters as a JSON object string.

    ``gpu``: Katib trials request a GPU on the GPU pool (False for a CPU-only cluster).
    """
    from mammosynth.tune import run_tune

    cfg = _cfg("tune", config, preset, overrides)
    if cfg.tune.n_trials <= 0:
        return "{}"
    with tempfile.TemporaryDirectory(prefix="mammosynth-tune-") as tmp:
        result = run_tune(
            prepared_dir,
            Path(tmp) / "best_params.json",
            backend=cfg.tune.backend,
            n_trials=cfg.tune.n_trials,
            epochs_per_trial=cfg.tune.epochs_per_trial,
            seed=cfg.seed,
            model=cfg.classifier.model,
            batch_size=cfg.classifier.batch_size,
            learning_rate=cfg.classifier.learning_rate,
            dropout=cfg.classifier.dropout,
            **cfg.classifier.hparams,
            data_uri=prepared_uri or prepared_dir,
            timeout_s=cfg.tune.timeout_s,
            algorithm=cfg.tune.algorithm,
            image=image or None,
            gpu=gpu,
        )
    log.info("tune: best %s = %.4f with %s", "val_auc", result.best_value, result.best_params)
    return json.dumps(result.best_params, sort_keys=True)


# Steps 5–6 ------------------------------------------------------------------------------------------
def train_gan_step(
    prepared_dir: str,
    out_dir: str,
    *,
    config: str = "",
    preset: str = "embedded",
    overrides: str | dict | None = None,
    reuse_uri: str = "",
    checkpoint_uri: str = "",
    run_key: str = "",
) -> dict:
    """Train the GAN (one generator per GAN seed), resumably, or record a reused synthetic set.

    When ``reuse_uri`` names a published synthetic set, nothing is trained: the step records which
    set the run reuses (its lineage says which generator made it).

    With ``checkpoint_uri`` (``s3://bucket/prefix`` or a local / PVC path) generator ``k`` mirrors its
    checkpoints to ``<checkpoint_uri>/<run_key>/gan-seed-<k>/`` and resumes from there, so a retried
    pod continues instead of starting over; ``run_key`` must stay the same across retries of the
    task (the pipeline passes the KFP run ID). Empty: checkpoints stay in ``out_dir`` only.

    Raises:
        ValueError: ``checkpoint_uri`` without a usable ``run_key``.
    """
    cfg = _cfg("gan", config, preset, overrides)
    if reuse_uri:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "reused.json").write_text(json.dumps({"synthetic_set_uri": reuse_uri}, indent=2))
        log.info("train_gan: reusing the published synthetic set %s; no GAN trained", reuse_uri)
        return {"reused_synthetic_set": reuse_uri}
    from mammosynth.checkpoints import durable_uri
    from mammosynth.gan import train_gan
    from mammosynth.synthesize import GENERATOR_PREFIX

    if checkpoint_uri:
        durable_uri(checkpoint_uri, run_key, GENERATOR_PREFIX)  # a bad run key fails before any training
    g = cfg.gan
    n_gen = max(1, int(g.seeds))
    results = []
    for k in range(n_gen):
        # One generator per GAN seed (gan-seed-<k>/ when there are several) so the across-seed intervals
        # of the synthetic arms include generator randomness.
        target_name = f"{GENERATOR_PREFIX}{k}"
        target = Path(out_dir) / target_name if n_gen > 1 else Path(out_dir)
        results.append(
            train_gan(
                prepared_dir,
                target,
                kind=g.kind,
                steps=g.steps,
                batch_size=g.batch_size,
                latent_dim=g.latent_dim,
                learning_rate=g.learning_rate,
                seed=gan_seed(cfg, k),
                checkpoint_every=g.checkpoint_every,
                checkpoint_uri=durable_uri(checkpoint_uri, run_key, target_name) if checkpoint_uri else "",
            )
        )
    info = {k: v for k, v in results[0].items() if isinstance(v, (int, float, str, bool))}
    return {**info, "n_generators": n_gen, "gan_seeds": json.dumps([gan_seed(cfg, k) for k in range(n_gen)])}


def gan_seed(cfg: StudyConfig | StageConfig, k: int) -> int:
    """Training seed of generator ``k`` (generator 0 keeps the study seed)."""
    return int(cfg.seed) + 1000 * int(k)


def synthetic_counts(cfg: StudyConfig | StageConfig, n_real_train: int) -> dict[str, int]:
    """Images per class to synthesise.

    Enough for the largest synthetic:real ratio any arm uses (TSTR needs as many as the real training
    set), split evenly across classes.
    """
    ratios = [parse_arm(a, cfg.synthetic_ratio).synthetic_ratio for a in cfg.arms]
    total = math.ceil(max(ratios + [0.0]) * n_real_train)
    per_class = max(1, math.ceil(total / len(CLASS_NAMES)))
    return dict.fromkeys(CLASS_NAMES, per_class)


def synthetic_val_counts(cfg: StudyConfig | StageConfig, n_real_val: int) -> dict[str, int] | None:
    """Images per class of the synthetic ``val`` split TSTR selects on (as large as the real val split).

    Returns None when no arm trains on synthetic images only.
    """
    if not any(parse_arm(a, cfg.synthetic_ratio).is_tstr for a in cfg.arms):
        return None
    return dict.fromkeys(CLASS_NAMES, max(1, math.ceil(n_real_val / len(CLASS_NAMES))))


def synthesize_step(
    generator_dir: str,
    prepared_dir: str,
    out_dir: str,
    *,
    config: str = "",
    preset: str = "embedded",
    overrides: str | dict | None = None,
    reuse_uri: str = "",
    publish_uri: str = "",
) -> dict:
    """Sample the synthetic set, or copy a published one.

    The set is published with its lineage when ``publish_uri`` is given; with ``reuse_uri`` the verified
    published set is copied instead, so a run can reuse it without retraining the GAN.
    """
    from mammosynth.data import shards
    from mammosynth.synthesize import check_reuse_lineage

    cfg = _cfg("synthesize", config, preset, overrides)
    n_train = sum(shards.read_meta(prepared_dir)["counts"]["train"].values())
    if reuse_uri:
        with tempfile.TemporaryDirectory(prefix="mammosynth-reuse-") as tmp:
            local = storage.open_set(reuse_uri, Path(tmp) / "set")  # refuses unverified sets
            meta = shards.read_meta(local)
            want = shards.read_meta(prepared_dir)["image_size"]
            if meta["image_size"] != want:
                raise ValueError(
                    f"synthetic set {reuse_uri} has {meta['image_size']}px images, the prepared set "
                    f"{want}px: reuse a set made at the same image_size or drop synthetic_set_uri"
                )
            check_reuse_lineage(meta, prepared_dir, reuse_uri)  # its generator saw only our train patients
            shutil.copytree(local, out_dir, dirs_exist_ok=True)
        log.info("synthesize: reused %s (%s)", reuse_uri, meta["counts"])
        return {"reused_from": reuse_uri, "n_real_train": n_train, "image_size": int(meta["image_size"])}
    from mammosynth.synthesize import generator_sets, run_synthesize, train_split_lineage

    counts = synthetic_counts(cfg, n_train)
    n_val = sum(shards.read_meta(prepared_dir)["counts"].get("val", {}).values())
    trained_on = train_split_lineage(prepared_dir, cfg.seed, cfg.val_fraction)
    gens = generator_sets(generator_dir)
    published = []
    for k, gen_root in enumerate(gens):
        generator = gen_root / "generator"  # train_gan keeps checkpoints beside the final generator
        target = Path(out_dir) / gen_root.name if len(gens) > 1 else Path(out_dir)
        meta = run_synthesize(
            generator if generator.is_dir() else gen_root,
            target,
            n_per_class=counts,
            seed=gan_seed(cfg, k) + 1,
            publish_uri=(f"{publish_uri.rstrip('/')}/{gen_root.name}" if len(gens) > 1 else publish_uri)
            or None,
            n_val_per_class=synthetic_val_counts(cfg, n_val),
            trained_on=trained_on,
        )
        published.append(meta.get("published_uri", ""))
    return {
        "n_per_class": json.dumps(counts),
        "n_real_train": n_train,
        "n_generators": len(gens),
        "image_size": int(meta.get("image_size", cfg.image_size)),
        "published_uri": ",".join(u for u in published if u),
    }


def assess_generator_step(
    prepared_dir: str,
    synthetic_dir: str,
    out_dir: str,
    *,
    config: str = "",
    preset: str = "embedded",
    overrides: str | dict | None = None,
) -> dict:
    """The generator report card(s) against the held-out real validation split; returns the scalars."""
    from mammosynth.quality import run_quality, summarise_cards
    from mammosynth.synthesize import generator_sets

    cfg = _cfg("card", config, preset, overrides)
    # Held-out real = the validation split: the GAN never trained on it, the test set stays untouched.
    sets = generator_sets(synthetic_dir)
    if len(sets) == 1:
        card = run_quality(prepared_dir, synthetic_dir, out_dir, heldout_split="val", seed=cfg.seed)
        return {k: v for k, v in card.items() if isinstance(v, (int, float, str, bool))}
    # One report card per generator (the first one's figures at the top level), then mean and range.
    cards = [
        run_quality(prepared_dir, s, Path(out_dir) / s.name, heldout_split="val", seed=cfg.seed) for s in sets
    ]
    card = summarise_cards(cards, out_dir)
    for png in (Path(out_dir) / sets[0].name).glob("*.png"):
        shutil.copy2(png, Path(out_dir) / png.name)
    return {k: v for k, v in card.items() if isinstance(v, (int, float, str, bool))}


# Step 7 ---------------------------------------------------------------------------------------------
def plan_arms(
    *, config: str = "", preset: str = "embedded", overrides: str | dict | None = None
) -> list[str]:
    """The preset's arms, validated; `real` always runs since every comparison is against it."""
    cfg = _cfg("plan", config, preset, overrides)
    arms = list(dict.fromkeys(cfg.arms))
    controls = [armlib.matched_control(parse_arm(arm, cfg.synthetic_ratio)) for arm in arms]
    if "real" not in arms:
        arms.insert(0, "real")
    # Every synthetic arm runs with its matched control (real+aug+synthetic needs real+aug).
    arms += [c for c in dict.fromkeys(controls) if c and c not in arms]
    return arms


def arm_tasks(plan_config: str, arm_config: str) -> list[dict[str, str]]:
    """The ParallelFor items: ``{"arm": name, "config": train_arm view}`` per planned arm.

    The train_arm view rides in each loop item because kfp.local 2.17 resolves an outer task's
    parameter output inside a ParallelFor to the loop item; a loop item's fields resolve correctly.

    Raises:
        ValueError: ``arm_config`` is not the train_arm view.
    """
    from_stage_view(arm_config, "train_arm")  # refuse a wrong view here, not once per arm
    return [{"arm": arm, "config": arm_config} for arm in plan_arms(config=plan_config)]


def train_arm_step(
    prepared_dir: str,
    synthetic_dir: str,
    out_dir: str,
    *,
    arm: str,
    best_params_path: str | None = None,
    config: str = "",
    preset: str = "embedded",
    overrides: str | dict | None = None,
    external_dir: str = "",
) -> dict:
    """Train one arm over the config's seeds; with an external set (`external_step`) each seed predicts it."""
    from mammosynth.external import external_dir_or_none
    from mammosynth.train import train_arm

    cfg = _cfg("train_arm", config, preset, overrides)
    c = cfg.classifier
    params = {"learning_rate": c.learning_rate, "dropout": c.dropout, **c.hparams}
    if best_params_path and Path(best_params_path).exists():
        params.update(json.loads(Path(best_params_path).read_text() or "{}"))
    result = train_arm(
        prepared_dir,
        out_dir,
        arm=arm,
        seeds=list(cfg.seeds),
        synthetic_dir=synthetic_dir,
        default_ratio=cfg.synthetic_ratio,
        model=c.model,
        epochs=c.epochs,
        batch_size=c.batch_size,
        patience=c.patience,
        external_dir=external_dir_or_none(external_dir),
        **params,
    )
    return {
        "arm": arm,
        "seeds": json.dumps(list(cfg.seeds)),
        "params": json.dumps(params, sort_keys=True, default=str),
        "n_seeds": len(result.get("seeds", cfg.seeds)),
    }


# Steps 8–9 ------------------------------------------------------------------------------------------
def _arm_name(arm_dir: str | Path) -> str:
    return armlib.read_arm_record(arm_dir)["arm"]


final_arm = armlib.final_arm  # the rule lives in mammosynth.arms


def deployed_seed(arm_dir: str | Path) -> int:
    """The seed whose model is deployed: the first seed of the final arm (the one that kept model/)."""
    return int(armlib.read_arm_record(arm_dir)["seeds"][0])


def _deployed_model_dir(arm_dir: str | Path) -> Path | None:
    """The deployed seed's saved model folder of an arm (its ``model.json`` carries ingest's record)."""
    try:
        return armlib.seed_dir(arm_dir, deployed_seed(arm_dir)) / armlib.MODEL_DIR
    except (OSError, ValueError, KeyError, IndexError):
        return None


def evaluate_step(
    arm_dirs: list[str],
    out_dir: str,
    *,
    config: str = "",
    preset: str = "embedded",
    overrides: str | dict | None = None,
) -> dict:
    """Statistics over all arms; returns the Kubeflow UI's scalars (`mammosynth.ui_metrics.scalars`).

    Returns:
        ``{"scalars": {name: value}}``: per-arm AUC/accuracy and, per matched comparison, ΔAUC, its CIs
        and the Holm-adjusted p. The deployed model's ROC is `deployed_roc_step`'s (select_model).
    """
    from mammosynth import ui_metrics
    from mammosynth.evaluate import run_evaluate

    cfg = _cfg("evaluate", config, preset, overrides)
    chosen = final_arm(arm_dirs)
    metrics = run_evaluate(
        arm_dirs,
        out_dir,
        n_bootstrap=cfg.n_bootstrap,
        seed=cfg.seed,
        context={
            "preset": cfg.preset,
            "final_arm": _arm_name(chosen),
            "ui_metrics": "Metrics: per-arm AUC and accuracy (means over seeds), and per matched comparison "
            "dAUC, its 95% CIs and the Holm-adjusted p; ClassificationMetrics per arm (train_arm) and for "
            f"the deployed model (select_model: arm {_arm_name(chosen)}, seed {deployed_seed(chosen)})",
        },
    )
    return {"scalars": ui_metrics.scalars(metrics)}


def arm_roc_step(arm_dir: str, *, source: str = "embedded") -> dict:
    """The UI's ClassificationMetrics of one trained arm (`mammosynth.ui_metrics.arm_classification`).

    Args:
        arm_dir: the arm dir `train_arm_step` wrote.
        source: the study's ``source`` (names the test set: phantom data is called phantom).

    Returns:
        `mammosynth.ui_metrics.classification`'s dict.
    """
    from mammosynth import ui_metrics
    from mammosynth.provenance import data_source, test_set_name

    kind = data_source(source, _deployed_model_dir(arm_dir))
    return ui_metrics.arm_classification(arm_dir, test_set=test_set_name(kind))


def deployed_roc_step(arm_dirs: list[str], *, source: str = "embedded") -> dict:
    """The UI's ClassificationMetrics of the deployed model: the final arm's first seed on the test set.

    Args:
        arm_dirs: every arm dir (the final one is chosen as `select_model_step` chooses it).
        source: the study's ``source`` (names the test set: phantom data is called phantom).

    Returns:
        `mammosynth.ui_metrics.classification`'s dict.
    """
    from mammosynth import ui_metrics
    from mammosynth.provenance import data_source, test_set_name

    chosen = final_arm(arm_dirs)
    return ui_metrics.deployed_classification(
        chosen,
        deployed_seed(chosen),
        test_set=test_set_name(data_source(source, _deployed_model_dir(chosen))),
    )


def provenance(meta: dict, *, source: str, preset: str, split_seed: int) -> dict[str, str]:
    """The ``data_source`` and ``trained_on`` fields of a final model's ``model.json``.

    Args:
        meta: the model's metadata as training wrote it (``training`` counts, ``selected_arm``).
        source: the study's ``source`` argument (``embedded``, a folder or an s3:// prefix).
        preset: the config preset.
        split_seed: the seed that fixed the patient split (and the phantom).

    Returns:
        ``{"data_source": "phantom" | "cbis-ddsm" | "table", "trained_on": "<one line>"}``; the model server
        warns when a ``phantom`` model is asked about real images.
    """
    from mammosynth.provenance import data_source

    training = meta.get("training") or {}
    kind = data_source(source, meta)  # ingest's record in the seed model's metadata, else the source name
    n_real, n_syn = training.get("n_train_real"), training.get("n_train_synthetic")
    images = f"{n_real} real + {n_syn or 0} synthetic training images" if n_real is not None else "?"
    where = source
    if kind == "phantom":
        origin = "the embedded phantom" if source == "embedded" else f"the phantom uploaded to {source}"
        where = f"{origin} (synthetic-looking, not real mammograms)"
    arm = meta.get("selected_arm") or training.get("arm")
    line = (
        f"preset {preset}, {kind} data from {where}, {images}, arm {arm}, "
        f"seed {meta.get('seed')}, split seed {split_seed}"
    )
    return {"data_source": kind, "trained_on": line}


def select_model_step(
    arm_dirs: list[str],
    evaluation_dir: str,
    out_dir: str,
    *,
    source: str = "embedded",
    config: str = "",
    preset: str = "embedded",
    overrides: str | dict | None = None,
) -> dict:
    """Copy the final arm's first-seed model and export the serving layouts next to it.

    Its ``model.json`` records ``data_source`` and ``trained_on`` (`provenance`).
    """
    from mammosynth.models.io import load_classifier, save_classifier

    cfg = _cfg("select", config, preset, overrides)
    chosen = Path(final_arm(arm_dirs))
    model_dirs = sorted(chosen.glob("seed-*/model"))
    if not model_dirs:
        raise FileNotFoundError(f"arm {_arm_name(chosen)} kept no model (seed-*/model missing in {chosen})")
    model, meta = load_classifier(model_dirs[0])
    meta = {**meta, "selected_arm": _arm_name(chosen), "selected_by": "mean validation AUC"}
    meta.update(provenance(meta, source=source, preset=cfg.preset, split_seed=cfg.seed))
    save_classifier(model, out_dir, meta, export_saved_model=True)
    return {
        "arm": meta["selected_arm"],
        "seed": str(meta.get("seed", "")),
        "image_size": meta["image_size"],
        "data_source": meta["data_source"],
    }


# Step 10 --------------------------------------------------------------------------------------------
def report_step(
    run_dir: str,
    md_path: str,
    html_path: str,
    *,
    evaluation: str,
    report_card: str,
    final_model: str,
    prepared_set: str,
    split_set: str,
    synthetic_set: str,
    config: str = "",
    preset: str = "embedded",
    overrides: str | dict | None = None,
    source: str = "embedded",
    external_set: str = "",
) -> dict:
    """Assemble the run folder (`mammosynth.report.assemble_run`) and write the two UI artifacts.

    The Markdown and HTML artifacts embed their figures as data URIs (`mammosynth.report.write_ui_artifacts`)
    so the Kubeflow UI shows them; the run folder's ``report.md`` keeps its relative links.
    """
    from mammosynth.report import assemble_run, write_ui_artifacts

    paths = {
        **({"external_set": external_set} if external_set else {}),
        "evaluation": evaluation,
        "report_card": report_card,
        "final_model": final_model,
        "prepared_set": prepared_set,
        "split_set": split_set,
        "synthetic_set": synthetic_set,
    }
    cfg = _cfg("report", config, preset, overrides)
    # The re-run command rebuilds this config: the fields that differ from the preset, as overrides.
    out = assemble_run(Path(run_dir), cfg, paths, source=source, overrides=preset_diff(cfg))
    embedded = write_ui_artifacts(out, md_path, html_path)
    return {
        "run_dir": str(out),
        "figures_embedded": embedded["markdown"]["embedded"],
        "figures_not_embedded": len(embedded["markdown"]["omitted"]),
    }


# Step 11 --------------------------------------------------------------------------------------------
def deploy_step(
    final_model: str, *, model_uri: str = "", namespace: str = "mammosynth", service_name: str = "mammosynth"
) -> str:
    """Export the final model and create/update its one InferenceService (`mammosynth.cluster.deploy`).

    ``service_name`` is also the served model name; the default ``mammosynth`` is the local one.
    """
    from mammosynth.cluster.deploy import deploy

    return str(deploy(final_model, model_uri=model_uri, namespace=namespace, name=service_name))
