"""One registry per pluggable family, and every default declared once (in the config)."""

from __future__ import annotations

import inspect

from mammosynth import config, registry, train, tune


def test_config_reads_the_registry():
    assert config.CLASSIFIER_NAMES is registry.CLASSIFIER_NAMES
    assert config.GAN_KINDS is registry.GAN_KINDS


def test_registry_matches_the_implementations():
    from mammosynth.models import cgan, classifiers

    assert tuple(classifiers.BUILDERS) == registry.CLASSIFIER_NAMES
    for name, target in registry.CLASSIFIERS.items():
        assert registry.load(target) is classifiers.BUILDERS[name]
    assert cgan.KINDS is registry.GAN_KINDS


def test_train_cli_and_signature_defaults_equal_the_config():
    cls = config.ClassifierConfig()
    args = train._parser().parse_args(["--data", "d", "--out", "o"])
    for field in ("model", "epochs", "batch_size", "patience"):
        assert getattr(args, field) == getattr(cls, field), field
    sig = inspect.signature(train.train_classifier).parameters
    for field in ("model", "epochs", "batch_size", "learning_rate", "dropout", "patience"):
        assert sig[field].default == getattr(cls, field), field


def test_tune_defaults_equal_the_config():
    tc = config.TuneConfig()
    sig = inspect.signature(tune.run_tune).parameters
    for field in ("backend", "n_trials", "epochs_per_trial", "algorithm", "timeout_s"):
        assert sig[field].default == getattr(tc, field), field
    assert sig["batch_size"].default == config.ClassifierConfig().batch_size
    # The CLI leaves these unset so the preset's values win.
    args = tune._parser().parse_args([])
    assert args.n_trials is None and args.epochs_per_trial is None and args.model is None
