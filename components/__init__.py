"""One thin KFP component per study stage.

Each imports `mammosynth` inside its body and makes one call; the image already has kfp, so components do
not pip-install it (install_kfp_package=False).

`TRAINER_IMAGE` is the image every component runs in (built from images/trainer.Dockerfile); override it
at compile time with the MAMMOSYNTH_TRAINER_IMAGE environment variable.
"""

from components.config import resolve_config
from components.data import ingest, prepare_external, preprocess, split
from components.experiment import evaluate, plan_arms, report, select_model, train_arm
from components.generative import assess_generator, synthesize, train_gan
from components.serving import deploy
from components.tuning import tune

__all__ = [
    "assess_generator",
    "deploy",
    "evaluate",
    "ingest",
    "plan_arms",
    "prepare_external",
    "preprocess",
    "report",
    "resolve_config",
    "select_model",
    "split",
    "synthesize",
    "train_arm",
    "train_gan",
    "tune",
]
