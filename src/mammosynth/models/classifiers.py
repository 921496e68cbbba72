"""Classifier builders: the study's four networks plus a modern efficient one.

Every builder has the signature ``build_<name>(input_shape=(S,S,1), num_classes=2, **hp)`` and
returns an uncompiled `keras.Model` that takes float [0,1] images with 1 or 3 channels and returns
P(malignant) as one sigmoid unit, shape (N,1). The two classes need only one unit; ``num_classes``
is accepted for the common builder signature and must be 2.

Transfer-learning builders (`build_vgg16`, `build_inception_resnet_v2`, `build_efficientnet_b0`)
repeat the gray channel into RGB and apply the application's own ``preprocess_input`` inside the
model, so serving feeds the same [0,1] image as every other classifier. Their ImageNet backbone is
the layer named `BACKBONE` and starts frozen; `fine_tune_schedule` says when to unfreeze it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import keras

from mammosynth.models.layers import GrayToRGB, ImagenetPreprocess

log = logging.getLogger(__name__)

BACKBONE = "backbone"


def _check_input(
    name: str, input_shape: Sequence[int], min_size: int, num_classes: int
) -> tuple[int, int, int]:
    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3:
        raise ValueError(f"{name}: input_shape must be (S,S,C), got {input_shape}")
    height, width, channels = shape
    if channels not in (1, 3):
        raise ValueError(f"{name}: expected 1 or 3 channels, got {channels} in input_shape {shape}")
    if min(height, width) < min_size:
        raise ValueError(
            f"{name}: image size {height}x{width} is below this network's minimum of {min_size}x{min_size}; "
            f"preprocess to image_size >= {min_size} or choose another model"
        )
    if num_classes != 2:
        raise ValueError(
            f"{name}: only binary benign/malignant is supported (num_classes=2), got {num_classes}"
        )
    return shape


def _head(x, dropout: float, dense_units: int = 0, name_prefix: str = "head"):
    if dense_units:
        x = keras.layers.Dense(dense_units, activation="relu", name=f"{name_prefix}_dense")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, name=f"{name_prefix}_dropout")(x)
    # float32 output so mixed-precision training keeps a numerically safe sigmoid/loss.
    return keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="p_malignant")(x)


def build_simple_cnn(
    input_shape=(64, 64, 1),
    num_classes: int = 2,
    *,
    dropout: float = 0.3,
    filters: Sequence[int] = (32, 64, 128),
    dense_units: int = 128,
    pooling: str = "flatten",
) -> keras.Model:
    """The study's simple CNN: conv(3×3)+max-pool blocks, a dense layer, dropout, sigmoid.

    Args:
        input_shape: (S,S,C), C ∈ {1,3}; S ≥ 2**len(filters).
        num_classes: must be 2: one sigmoid unit, P(malignant) (malignant = 1, the positive class).
        dropout: dropout before the output unit.
        filters: filters of each conv block.
        dense_units: width of the hidden dense layer.
        pooling: ``flatten`` (the study) or ``gap`` (global average pooling; far fewer weights at 224²).
    """
    shape = _check_input("simple_cnn", input_shape, 2 ** len(filters), num_classes)
    if pooling not in ("flatten", "gap"):
        raise ValueError(f"simple_cnn: pooling must be 'flatten' or 'gap', got {pooling!r}")
    inputs = keras.Input(shape, name="image")
    x = inputs
    for i, f in enumerate(filters):
        x = keras.layers.Conv2D(int(f), 3, padding="same", activation="relu", name=f"conv{i + 1}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = keras.layers.Flatten()(x) if pooling == "flatten" else keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, _head(x, dropout, dense_units), name="simple_cnn")


def build_tuned_cnn(
    input_shape=(64, 64, 1),
    num_classes: int = 2,
    *,
    n_conv_layers: int = 3,
    filters: int | Sequence[int] = 32,
    dense_units: int = 128,
    dropout: float = 0.3,
    batch_norm: bool = True,
) -> keras.Model:
    """The study's Optuna-searched CNN (the space is `mammosynth.space.SEARCH_SPACE`).

    Args:
        input_shape: (S,S,C), C ∈ {1,3}.
        num_classes: must be 2: one sigmoid unit, P(malignant) (malignant = 1, the positive class).
        n_conv_layers: number of conv(3×3)+max-pool blocks; S must be ≥ 2**n_conv_layers.
        filters: filters of the first block (doubled each block, capped at 512) or one per block.
        dense_units: width of the hidden dense layer.
        dropout: dropout before the output unit.
        batch_norm: batch normalisation after each conv.
    """
    n = int(n_conv_layers)
    if n < 1:
        raise ValueError(f"tuned_cnn: n_conv_layers must be >= 1, got {n_conv_layers}")
    if isinstance(filters, int | float):
        per_layer = [min(int(filters) * 2**i, 512) for i in range(n)]
    else:
        per_layer = [int(f) for f in filters]
        if len(per_layer) != n:
            raise ValueError(f"tuned_cnn: {len(per_layer)} filter counts given for n_conv_layers={n}")
    shape = _check_input("tuned_cnn", input_shape, 2**n, num_classes)
    inputs = keras.Input(shape, name="image")
    x = inputs
    for i, f in enumerate(per_layer):
        x = keras.layers.Conv2D(f, 3, padding="same", use_bias=not batch_norm, name=f"conv{i + 1}")(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"bn{i + 1}")(x)
        x = keras.layers.Activation("relu", name=f"relu{i + 1}")(x)
        x = keras.layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, _head(x, dropout, int(dense_units)), name="tuned_cnn")


def _transfer(
    name: str,
    app_cls: Callable[..., keras.Model],
    min_size: int,
    input_shape,
    num_classes: int,
    weights: str | None,
    dropout: float,
    dense_units: int,
) -> keras.Model:
    shape = _check_input(name, input_shape, min_size, num_classes)
    inputs = keras.Input(shape, name="image")
    x = GrayToRGB(name="gray_to_rgb")(inputs)
    x = ImagenetPreprocess(name, name="imagenet_preprocess")(x)
    base = app_cls(include_top=False, weights=weights, input_shape=(shape[0], shape[1], 3), pooling="avg")
    base.name = BACKBONE
    base.trainable = False
    # training=False keeps BatchNorm statistics frozen even after unfreezing for fine-tuning
    # (Keras' transfer-learning guidance: updating them on a small set wrecks the pretrained features).
    x = base(x, training=False)
    return keras.Model(inputs, _head(x, dropout, dense_units), name=name)


def build_vgg16(
    input_shape=(224, 224, 1),
    num_classes: int = 2,
    *,
    weights: str | None = "imagenet",
    dropout: float = 0.3,
    dense_units: int = 256,
) -> keras.Model:
    """VGG16 transfer learning (min 32×32). ``weights``: "imagenet", a local notop .h5 path, or None."""
    return _transfer(
        "vgg16", keras.applications.VGG16, 32, input_shape, num_classes, weights, dropout, dense_units
    )


def build_inception_resnet_v2(
    input_shape=(224, 224, 1),
    num_classes: int = 2,
    *,
    weights: str | None = "imagenet",
    dropout: float = 0.3,
    dense_units: int = 0,
) -> keras.Model:
    """InceptionResNetV2 transfer learning (min 75×75). ``weights`` as for `build_vgg16`."""
    return _transfer(
        "inception_resnet_v2",
        keras.applications.InceptionResNetV2,
        75,
        input_shape,
        num_classes,
        weights,
        dropout,
        dense_units,
    )


def build_efficientnet_b0(
    input_shape=(224, 224, 1),
    num_classes: int = 2,
    *,
    weights: str | None = "imagenet",
    dropout: float = 0.3,
    dense_units: int = 0,
) -> keras.Model:
    """EfficientNetB0 transfer learning (min 32×32): a modern, 5M-parameter comparison point."""
    return _transfer(
        "efficientnet_b0",
        keras.applications.EfficientNetB0,
        32,
        input_shape,
        num_classes,
        weights,
        dropout,
        dense_units,
    )


# The same names, as lazy import paths, are in `mammosynth.registry.CLASSIFIERS` (read by the config).
BUILDERS: dict[str, Callable[..., keras.Model]] = {
    "simple_cnn": build_simple_cnn,
    "tuned_cnn": build_tuned_cnn,
    "vgg16": build_vgg16,
    "inception_resnet_v2": build_inception_resnet_v2,
    "efficientnet_b0": build_efficientnet_b0,
}

MIN_SIZES = {"vgg16": 32, "inception_resnet_v2": 75, "efficientnet_b0": 32}


def build_classifier(name: str, input_shape=(64, 64, 1), **hp) -> keras.Model:
    """Build a registered classifier by name.

    Raises:
        ValueError: unknown name (naming the known ones), or a bad shape.
        TypeError: a hyperparameter this builder does not take.
    """
    if name not in BUILDERS:
        raise ValueError(f"unknown classifier {name!r}; choose one of: {', '.join(BUILDERS)}")
    try:
        return BUILDERS[name](input_shape, **hp)
    except TypeError as exc:
        raise TypeError(f"classifier {name!r}: {exc}") from exc


def backbone(model: keras.Model) -> keras.Model | None:
    """The pretrained backbone of a transfer-learning classifier, or None."""
    try:
        return model.get_layer(BACKBONE)
    except ValueError:
        return None


@dataclass(frozen=True)
class FineTunePhase:
    """One training phase: how many epochs, how much of the backbone trains, at what learning rate.

    ``trainable_layers`` counts backbone layers from the top; 0 keeps it frozen, -1 unfreezes all.
    """

    epochs: int
    trainable_layers: int
    learning_rate: float


def fine_tune_schedule(
    model: keras.Model,
    epochs: int,
    learning_rate: float,
    *,
    warmup_fraction: float = 0.4,
    unfreeze_fraction: float = 0.3,
    fine_tune_lr_factor: float = 0.1,
) -> list[FineTunePhase]:
    """Phases for training ``model``: frozen-backbone warm-up, then fine-tune the top of the backbone.

    Models without a backbone train in one phase. The fine-tuning phase uses a smaller learning
    rate so the freshly trained head's gradients do not destroy pretrained features.

    Args:
        model: a built classifier.
        epochs: total epochs over all phases.
        learning_rate: learning rate of the first phase.
        warmup_fraction: share of epochs with the backbone frozen (at least one epoch).
        unfreeze_fraction: share of backbone layers (from the top) unfrozen for fine-tuning; 1.0 = all.
        fine_tune_lr_factor: fine-tuning learning rate = learning_rate × this.
    """
    base = backbone(model)
    if base is None or epochs < 2:
        return [FineTunePhase(int(epochs), -1 if base is None else 0, float(learning_rate))]
    warm = min(max(1, round(epochs * warmup_fraction)), epochs - 1)
    n_layers = len(base.layers)
    top = -1 if unfreeze_fraction >= 1.0 else max(1, round(n_layers * unfreeze_fraction))
    return [
        FineTunePhase(warm, 0, float(learning_rate)),
        FineTunePhase(int(epochs) - warm, top, float(learning_rate) * fine_tune_lr_factor),
    ]


def set_trainable(model: keras.Model, trainable_layers: int) -> None:
    """Apply a phase's ``trainable_layers`` to the backbone (no-op for models without one).

    BatchNormalization layers stay frozen: their statistics are the pretrained ones.
    """
    base = backbone(model)
    if base is None:
        return
    if trainable_layers == 0:
        base.trainable = False
        return
    base.trainable = True
    cut = 0 if trainable_layers < 0 else max(0, len(base.layers) - trainable_layers)
    for i, layer in enumerate(base.layers):
        layer.trainable = i >= cut and not isinstance(layer, keras.layers.BatchNormalization)
    log.info(
        "backbone: %d of %d layers trainable", sum(layer.trainable for layer in base.layers), len(base.layers)
    )
