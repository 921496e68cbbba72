"""Config presets, overrides and arm names: what pipeline parameters are allowed to say."""

import json

import pytest

from mammosynth.config import PRESETS, from_dict, load_config, parse_arm


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_loads_and_round_trips(preset):
    cfg = load_config(preset)
    assert cfg.preset == preset
    assert from_dict(json.loads(cfg.to_json())) == cfg
    for arm in cfg.arms:
        parse_arm(arm, cfg.synthetic_ratio)


def test_overrides_apply_nested_and_from_json():
    cfg = load_config("tiny", '{"seeds": [3, 4, 5], "gan": {"steps": 7}}')
    assert cfg.seeds == (3, 4, 5)
    assert cfg.gan.steps == 7
    assert cfg.gan.latent_dim == PRESETS["tiny"]["gan"]["latent_dim"]  # untouched siblings kept


def test_unknown_preset_and_field_name_the_choices():
    with pytest.raises(ValueError, match="choose one of: tiny, embedded, cbis-ddsm"):
        load_config("laptop")
    with pytest.raises(ValueError, match="unknown config field gan.stpes"):
        load_config("tiny", {"gan": {"stpes": 3}})


def test_cluster_preset_is_the_study_configuration():
    cfg = load_config("cbis-ddsm")
    assert cfg.image_size == 224
    assert cfg.classifier.model == "inception_resnet_v2"
    assert cfg.tune.backend == "katib"
    assert len(cfg.seeds) >= 5


@pytest.mark.parametrize(
    ("name", "use_real", "augment", "ratio"),
    [
        ("real", True, False, 0.0),
        ("real+aug", True, True, 0.0),
        ("real+synthetic", True, False, 0.5),
        ("real+synthetic@0.25", True, False, 0.25),
        ("real+aug+synthetic@1.0", True, True, 1.0),
        ("tstr", False, False, 1.0),
    ],
)
def test_parse_arm(name, use_real, augment, ratio):
    spec = parse_arm(name, default_ratio=0.5)
    assert (spec.use_real, spec.augment, spec.synthetic_ratio) == (use_real, augment, ratio)


@pytest.mark.parametrize("bad", ["synthetic", "real+gan", "real@0.5", "real+synthetic@lots", "real+aug+aug"])
def test_parse_arm_rejects_unknown_forms(bad):
    with pytest.raises(ValueError, match="arm"):
        parse_arm(bad)


@pytest.mark.parametrize(
    "overrides, field, allowed",
    [
        ({"seeds": "012"}, "seeds", "a list (JSON array)"),
        ({"seeds": ["0", "1"]}, "seeds.0", "integer"),
        ({"gan": {"steps": 1.9}}, "gan.steps", "integer"),
        ({"gan": {"steps": 0}}, "gan.steps", "greater than or equal to 1"),
        ({"val_fraction": 5}, "val_fraction", "less than 0.5"),
        ({"gan": {"kind": "big-gan"}}, "gan.kind", "'stable-cgan', 'seed-cgan' or 'cvae'"),
        ({"classifier": {"model": "resnet"}}, "classifier.model", "'simple_cnn'"),
        ({"arms": ["real", "real+gan"]}, "arms", "real+synthetic[@ratio]"),
        ({"arms": ["real", "real"]}, "arms", "repeated"),
        ({"tune": {"backend": "hyperopt"}}, "tune.backend", "'optuna' or 'katib'"),
    ],
)
def test_bad_values_are_refused_at_load_in_one_line(overrides, field, allowed):
    with pytest.raises(ValueError) as info:
        load_config("tiny", overrides)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"config field {field}:"), message
    assert allowed in message
    value = next(iter(overrides.values()))
    value = next(iter(value.values())) if isinstance(value, dict) else value
    assert repr(value) in message or repr(value[0]) in message


def test_gan_seeds_per_preset_and_json_overrides():
    assert [load_config(p).gan.seeds for p in ("tiny", "embedded", "cbis-ddsm")] == [1, 2, 3]
    cfg = load_config("tiny", '{"seeds": [3, 4], "gan": {"seeds": 2}}')
    assert cfg.seeds == (3, 4) and cfg.gan.seeds == 2 and from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="not valid JSON"):
        load_config("tiny", "{seeds: 1}")


# ---- typed run parameters and per-stage views ---------------------------------------------------------
from mammosynth.config import (  # noqa: E402
    STAGE_FIELDS,
    StudyConfig,
    from_stage_view,
    preset_diff,
    resolve,
    stage_view,
    with_synthetic_ratios,
)


def test_resolve_applies_preset_then_typed_parameters_then_overrides():
    cfg = resolve("tiny", '{"gan": {"steps": 9}}', seeds=[5, 6], gan_steps=40, gan_seeds=2, image_size=48)
    assert cfg.seeds == (5, 6) and cfg.image_size == 48 and cfg.gan.seeds == 2
    assert cfg.gan.steps == 9  # overrides are applied last
    assert cfg.gan.latent_dim == PRESETS["tiny"]["gan"]["latent_dim"]


def test_empty_typed_parameters_keep_the_presets_values():
    empty = dict(seeds=[], arms=[], synthetic_ratios=[], image_size=0, classifier="", classifier_epochs=0)
    empty.update(tune_trials=0, gan_kind="", gan_steps=0, gan_seeds=0)
    assert resolve("tiny", "{}", **empty) == load_config("tiny")
    assert resolve("embedded", "", **empty) == load_config("embedded")


def test_typed_parameters_set_their_fields():
    cfg = resolve(
        "tiny",
        classifier="vgg16",
        classifier_epochs=7,
        tune_trials=4,
        gan_kind="seed-cgan",
        arms=["real", "real+aug", "tstr"],
    )
    assert (cfg.classifier.model, cfg.classifier.epochs, cfg.tune.n_trials) == ("vgg16", 7, 4)
    assert cfg.gan.kind == "seed-cgan" and cfg.arms == ("real", "real+aug", "tstr")


def test_kfp_list_numbers_are_seeds_only_when_whole():
    """KFP hands list items over as JSON numbers: 1.0 is seed 1, 1.5 is refused."""
    assert resolve("tiny", seeds=[0.0, 1.0, 2.0]).seeds == (0, 1, 2)
    with pytest.raises(ValueError, match=r"^config field seeds.0 \(run parameter seeds\): .*got 1.5"):
        resolve("tiny", seeds=[1.5])


def test_synthetic_ratios_replace_the_real_synthetic_arms_and_keep_the_others():
    arms = ["real", "real+aug", "real+synthetic", "real+aug+synthetic", "tstr"]
    assert with_synthetic_ratios(arms, [0.25, 1]) == [
        "real",
        "real+aug",
        "real+synthetic@0.25",
        "real+synthetic@1.0",
        "real+aug+synthetic",
        "tstr",
    ]
    # No real+synthetic arm to replace: the generated ones follow the others.
    assert with_synthetic_ratios(["real", "tstr"], [0.5]) == ["real", "tstr", "real+synthetic@0.5"]
    cfg = resolve("tiny", synthetic_ratios=[0.5, 2.0])  # tiny: real, real+synthetic
    assert cfg.arms == ("real", "real+synthetic@0.5", "real+synthetic@2.0")
    cfg = resolve("tiny", arms=["real", "real+aug"], synthetic_ratios=[1.0])
    assert cfg.arms == ("real", "real+aug", "real+synthetic@1.0")


@pytest.mark.parametrize(
    "params, start, allowed",
    [
        (
            {"gan_steps": -3},
            "config field gan.steps (run parameter gan_steps):",
            "greater than or equal to 1",
        ),
        ({"gan_kind": "big-gan"}, "config field gan.kind (run parameter gan_kind):", "'stable-cgan'"),
        ({"classifier": "resnet"}, "config field classifier.model (run parameter classifier):", "'vgg16'"),
        ({"arms": ["real", "real+gan"]}, "config field arms (run parameter arms):", "real+synthetic[@ratio]"),
        (
            {"image_size": 4},
            "config field image_size (run parameter image_size):",
            "greater than or equal to 16",
        ),
        ({"seeds": "012"}, "config field seeds (run parameter seeds):", "a list (JSON array)"),
        ({"synthetic_ratios": [20]}, "config field arms (run parameter synthetic_ratios):", "(0, 10]"),
        (
            {"synthetic_ratios": ["a"]},
            "config field arms (run parameter synthetic_ratios):",
            "list of numbers",
        ),
        ({"gan_stpes": 3}, "unknown run parameter(s) gan_stpes", "gan_steps"),
    ],
)
def test_bad_typed_parameters_are_refused_in_one_line(params, start, allowed):
    with pytest.raises(ValueError) as info:
        resolve("tiny", **params)
    message = str(info.value)
    assert "\n" not in message and message.startswith(start) and allowed in message, message


@pytest.mark.parametrize(
    "arm", ["real+synthetic@0", "real+synthetic@-1", "real+aug+synthetic@11", "real+synthetic@nan"]
)
def test_arm_ratios_out_of_range_are_refused(arm):
    with pytest.raises(ValueError, match=r"config field arms: arm .* out of range; .*\(0, 10\]"):
        load_config("tiny", {"arms": ["real", arm]})


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_stage_view_round_trips_and_holds_only_its_fields(preset):
    cfg = resolve(preset, seeds=[1, 2], gan_steps=77)
    for stage, fields in STAGE_FIELDS.items():
        text = stage_view(cfg, stage)
        assert text == stage_view(cfg, stage)  # deterministic: a stable cache key
        view = json.loads(text)
        assert view["stage"] == stage
        assert set(view["settings"]) == {f.split(".")[0] for f in fields}
        rebuilt = from_stage_view(text, stage)
        for path in fields:
            value, expected = rebuilt, cfg
            for part in path.split("."):
                value, expected = getattr(value, part), getattr(expected, part)
            assert value == expected, (stage, path)


def test_views_separate_the_stages():
    base = resolve("tiny")
    gan_change = resolve("tiny", gan_steps=99, seeds=[7, 8, 9], classifier_epochs=5)
    same = ["ingest", "split", "preprocess", "tune", "synthesize", "card", "plan", "evaluate", "select"]
    for stage in same:
        assert stage_view(base, stage) == stage_view(gan_change, stage), stage
    for stage in ("gan", "train_arm", "report"):
        assert stage_view(base, stage) != stage_view(gan_change, stage), stage
    bigger = resolve("tiny", image_size=48)
    assert stage_view(base, "split") == stage_view(bigger, "split")
    assert stage_view(base, "preprocess") != stage_view(bigger, "preprocess")


def test_reading_outside_the_view_fails_loudly():
    view = from_stage_view(stage_view(load_config("tiny"), "tune"), "tune")
    assert view.classifier.model == "simple_cnn" and view.tune.n_trials == 2
    with pytest.raises(AttributeError, match=r"stage 'tune' read config field 'classifier.epochs'"):
        _ = view.classifier.epochs
    with pytest.raises(AttributeError, match=r"stage 'tune' read config field 'gan'.*STAGE_FIELDS\['tune'\]"):
        _ = view.gan
    with pytest.raises(AttributeError, match="read-only"):
        view.seed = 3


def test_a_view_is_checked_when_rebuilt():
    text = stage_view(load_config("tiny"), "split")
    with pytest.raises(ValueError, match="got the config view of stage 'split'"):
        from_stage_view(text, "ingest")
    with pytest.raises(ValueError, match="is not a stage view"):
        from_stage_view('{"preset": "tiny"}', "split")
    bad = json.dumps({"stage": "split", "settings": {"seed": 1, "val_fraction": 5, "test_fraction": 0.2}})
    with pytest.raises(ValueError, match="^stage split: config field val_fraction: .*less than 0.5"):
        from_stage_view(bad, "split")
    with pytest.raises(ValueError, match="unknown stage 'train'"):
        stage_view(load_config("tiny"), "train")


def test_the_report_view_is_the_whole_config_and_preset_diff_rebuilds_it():
    cfg = resolve("embedded", '{"gan": {"latent_dim": 32}}', seeds=[0, 1], synthetic_ratios=[0.25])
    report = from_stage_view(stage_view(cfg, "report"), "report")
    assert report.to_dict() == cfg.to_dict()
    diff = preset_diff(cfg)
    assert diff["gan"] == {"latent_dim": 32} and diff["seeds"] == [0, 1] and "classifier" not in diff
    assert load_config("embedded", diff) == cfg
    assert preset_diff(load_config("tiny")) == {}
    assert set(STAGE_FIELDS["report"]) == set(StudyConfig.model_fields)


def test_a_stage_config_survives_copy_and_names_the_field():
    import copy

    view = from_stage_view(stage_view(load_config("tiny"), "split"), "split")
    clone = copy.deepcopy(view)
    assert clone.val_fraction == view.val_fraction == 0.15
    with pytest.raises(AttributeError, match="'image_size'"):
        _ = clone.image_size
