"""The container image every component runs in."""

import os

TRAINER_IMAGE = os.environ.get("MAMMOSYNTH_TRAINER_IMAGE", "ghcr.io/mammosynth/trainer:0.1.0")
