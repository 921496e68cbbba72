"""Custom Keras layers shared by builders; importing this module registers them for loading.

Model layers (`GrayToRGB`, `ImagenetPreprocess`) travel inside saved classifiers, so they must
deserialise in the serving container: `mammosynth.models.io.load_classifier` imports this module
first. `RandomEqualization` is an augmentation layer (see `mammosynth.data.augment`).
"""

from __future__ import annotations

import keras
import tensorflow as tf

PACKAGE = "mammosynth"

# keras.applications module per builder name: each application ships its own preprocess_input
# (VGG16: caffe BGR mean subtraction; InceptionResNetV2: [-1,1]; EfficientNet: identity because
# the network rescales internally; DenseNet: torch mean/std). Using the app's own function keeps the
# ImageNet statistics the pretrained weights expect.
APPLICATIONS = {
    "vgg16": "vgg16",
    "inception_resnet_v2": "inception_resnet_v2",
    "efficientnet_b0": "efficientnet",
    "densenet169": "densenet",
}


@keras.saving.register_keras_serializable(package=PACKAGE)
class GrayToRGB(keras.layers.Layer):
    """Repeat a single gray channel into three; pass 3-channel input through unchanged.

    Raises:
        ValueError: the input has neither 1 nor 3 channels.
    """

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels not in (1, 3):
            raise ValueError(f"GrayToRGB expects 1 or 3 channels, got {channels} (input shape {input_shape})")
        self._channels = channels
        super().build(input_shape)

    def call(self, inputs):
        if self._channels == 3:
            return inputs
        return keras.ops.repeat(inputs, 3, axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 3)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ImagenetPreprocess(keras.layers.Layer):
    """[0,1] RGB → the scaling a keras.applications network was trained with.

    Scales to [0,255] (what every ``preprocess_input`` expects) and then calls that application's
    own ``preprocess_input``, so the model takes the same [0,1] images as every other classifier.

    Args:
        app: a key of `APPLICATIONS` (``vgg16``, ``inception_resnet_v2``, ``efficientnet_b0``, ...).
    """

    def __init__(self, app: str, **kwargs):
        super().__init__(**kwargs)
        if app not in APPLICATIONS:
            raise ValueError(f"ImagenetPreprocess: unknown app {app!r}; known: {', '.join(APPLICATIONS)}")
        self.app = app

    def call(self, inputs):
        module = getattr(keras.applications, APPLICATIONS[self.app])
        return module.preprocess_input(inputs * 255.0)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "app": self.app}


def equalize_histogram(images: tf.Tensor, bins: int = 256, clip_limit: float | None = None) -> tf.Tensor:
    """Histogram-equalise each image of a (N,H,W,C) batch in [0,1] over all its pixels.

    With ``clip_limit`` the histogram is clipped at ``clip_limit`` × its mean bin count and the
    excess spread evenly over the bins before the CDF is taken (CLAHE's contrast limiting without
    the tiles), which keeps the flat background of a mammogram from being stretched into noise.
    """
    images = tf.convert_to_tensor(images, tf.float32)

    def one(img):
        flat = tf.reshape(img, [-1])
        hist = tf.cast(tf.histogram_fixed_width(flat, [0.0, 1.0], nbins=bins), tf.float32)
        if clip_limit is not None:
            limit = clip_limit * tf.reduce_mean(hist)
            excess = tf.reduce_sum(tf.nn.relu(hist - limit))
            hist = tf.minimum(hist, limit) + excess / bins
        cdf = tf.cumsum(hist)
        cdf = (cdf - cdf[0]) / tf.maximum(cdf[-1] - cdf[0], 1e-6)
        idx = tf.clip_by_value(tf.cast(tf.floor(flat * bins), tf.int32), 0, bins - 1)
        return tf.reshape(tf.gather(cdf, idx), tf.shape(img))

    return tf.map_fn(one, images, fn_output_signature=tf.float32)


@keras.saving.register_keras_serializable(package=PACKAGE)
class RandomEqualization(keras.layers.Layer):
    """Augmentation: histogram-equalise a random fraction of images (training only).

    Args:
        rate: probability that an image is equalised.
        clip_limit: None for global equalisation, else CLAHE-like contrast limiting (e.g. 2.0).
        bins: histogram bins.
        seed: op seed for the per-image coin flips.
    """

    def __init__(self, rate: float = 0.5, clip_limit: float | None = 2.0, bins: int = 256,
                 seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"RandomEqualization: rate must be in [0,1], got {rate}")
        self.rate, self.clip_limit, self.bins, self.seed = float(rate), clip_limit, int(bins), seed

    def call(self, inputs, training=None):
        if not training or self.rate == 0.0:
            return inputs
        x = tf.cast(inputs, tf.float32)
        flip = tf.random.uniform(tf.shape(x)[:1], seed=self.seed) < self.rate
        equalised = equalize_histogram(x, self.bins, self.clip_limit)
        return tf.where(flip[:, None, None, None], equalised, x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "clip_limit": self.clip_limit,
                "bins": self.bins, "seed": self.seed}
