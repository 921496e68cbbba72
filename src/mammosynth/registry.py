"""Names of the pluggable families, importable without keras or tensorflow.

One home for what can be chosen by name, so `mammosynth.config` validates choices without importing
the heavy modules that implement them:

- classifiers: builder name -> ``module:function`` (`mammosynth.models.classifiers.BUILDERS`);
- GAN kinds: generator kind -> ``module:function`` (`mammosynth.models.cgan.build`);
- storage schemes live in `mammosynth.storage.base.register_store`; arm kinds in `mammosynth.arms`.

To add a classifier or a generator, add its builder in the implementing module and its name here.
"""

from __future__ import annotations

import importlib
from typing import Any

CLASSIFIERS: dict[str, str] = {
    "simple_cnn": "mammosynth.models.classifiers:build_simple_cnn",
    "tuned_cnn": "mammosynth.models.classifiers:build_tuned_cnn",
    "vgg16": "mammosynth.models.classifiers:build_vgg16",
    "inception_resnet_v2": "mammosynth.models.classifiers:build_inception_resnet_v2",
    "efficientnet_b0": "mammosynth.models.classifiers:build_efficientnet_b0",
}
GAN_KINDS: tuple[str, ...] = ("stable-cgan", "seed-cgan", "cvae")  # built by `mammosynth.models.cgan`

CLASSIFIER_NAMES: tuple[str, ...] = tuple(CLASSIFIERS)


def load(target: str) -> Any:
    """Import and return the object a ``module:attribute`` path names.

    Args:
        target: a ``package.module:attribute`` string, as the registry values above.

    Returns:
        The attribute (imported lazily, so only the chosen family's module is loaded).

    Raises:
        ValueError: if ``target`` has no ``:``.
    """
    module, sep, attr = target.partition(":")
    if not sep:
        raise ValueError(f"registry target {target!r} must look like 'package.module:attribute'")
    return getattr(importlib.import_module(module), attr)
