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
