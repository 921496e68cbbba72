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
        """Record the channel count (1 or 3); any other count is refused here, at build time."""
        channels = input_shape[-1]
        if channels not in (1, 3):
            raise ValueError(f"GrayToRGB expects 1 or 3 channels, got {channels} (input shape {input_shape})")
        self._channels = channels
        super().build(input_shape)

    def call(self, inputs):
        """Repeat the gray channel three times; a 3-channel input is returned as is."""
        if self._channels == 3:
            return inputs
        return keras.ops.repeat(inputs, 3, axis=-1)

    def compute_output_shape(self, input_shape):
        """The input shape with 3 channels."""
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
        """Scale [0,1] to [0,255] and apply the application's own ``preprocess_input``."""
        module = getattr(keras.applications, APPLICATIONS[self.app])
        return module.preprocess_input(inputs * 255.0)

    def compute_output_shape(self, input_shape):
        """Unchanged: the preprocessing is element-wise."""
        return input_shape

    def get_config(self):
        """The layer config plus ``app``, so a saved classifier reloads with the same preprocessing."""
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

    def __init__(
        self,
        rate: float = 0.5,
        clip_limit: float | None = 2.0,
        bins: int = 256,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"RandomEqualization: rate must be in [0,1], got {rate}")
        self.rate, self.clip_limit, self.bins, self.seed = float(rate), clip_limit, int(bins), seed

    def call(self, inputs, training=None):
        """Equalise each image with probability ``rate`` when training; identity at inference."""
        if not training or self.rate == 0.0:
            return inputs
        x = tf.cast(inputs, tf.float32)
        flip = _uniform(tf.shape(x)[:1], 0.0, 1.0, self.seed, 13) < self.rate
        equalised = equalize_histogram(x, self.bins, self.clip_limit)
        return tf.where(flip[:, None, None, None], equalised, x)

    def compute_output_shape(self, input_shape):
        """Unchanged: equalisation keeps the shape."""
        return input_shape

    def get_config(self):
        """The layer config plus ``rate``, ``clip_limit``, ``bins`` and ``seed``."""
        return {
            **super().get_config(),
            "rate": self.rate,
            "clip_limit": self.clip_limit,
            "bins": self.bins,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class RandomGaussianBlur(keras.layers.Layer):
    """Augmentation: Gaussian-blur a random fraction of images by a random amount (training only).

    Each chosen image is blended between itself and its blur at ``sigma`` with a uniform random
    weight, which approximates a blur of random strength at the cost of one fixed separable
    convolution per batch. (Keras' RandomGaussianBlur bounds sigma to [0,1] px, too weak at 224².)

    Args:
        sigma: blur standard deviation in pixels at full strength.
        rate: probability that an image is blurred.
        seed: op seed.
    """

    def __init__(self, sigma: float = 1.0, rate: float = 0.5, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if sigma <= 0 or not 0.0 <= rate <= 1.0:
            raise ValueError(f"RandomGaussianBlur: need sigma > 0 and rate in [0,1], got {sigma}, {rate}")
        self.sigma, self.rate, self.seed = float(sigma), float(rate), seed

    def _kernel(self) -> tf.Tensor:
        radius = max(1, int(2.0 * self.sigma + 0.5))
        t = tf.range(-radius, radius + 1, dtype=tf.float32)
        k = tf.exp(-(t**2) / (2.0 * self.sigma**2))
        return k / tf.reduce_sum(k), radius

    def call(self, inputs, training=None):
        """Blend each chosen image towards its blur by a random strength when training; identity otherwise."""
        if not training or self.rate == 0.0:
            return inputs
        x = tf.cast(inputs, tf.float32)
        k, r = self._kernel()
        channels = x.shape[-1]
        # Reflect padding so the breast edge is not darkened by zeros.
        padded = tf.pad(x, [[0, 0], [r, r], [r, r], [0, 0]], mode="REFLECT")
        kx = tf.tile(tf.reshape(k, [1, -1, 1, 1]), [1, 1, channels, 1])
        ky = tf.tile(tf.reshape(k, [-1, 1, 1, 1]), [1, 1, channels, 1])
        blurred = tf.nn.depthwise_conv2d(padded, kx, [1, 1, 1, 1], "VALID")
        blurred = tf.nn.depthwise_conv2d(blurred, ky, [1, 1, 1, 1], "VALID")
        n = tf.shape(x)[:1]
        chosen = tf.cast(_uniform(n, 0.0, 1.0, self.seed, 11) < self.rate, tf.float32)
        strength = _uniform(n, 0.0, 1.0, self.seed, 12) * chosen
        return x + strength[:, None, None, None] * (blurred - x)

    def compute_output_shape(self, input_shape):
        """Unchanged: the blur keeps the shape (reflect padding, valid convolution)."""
        return input_shape

    def get_config(self):
        """The layer config plus ``sigma``, ``rate`` and ``seed``."""
        return {**super().get_config(), "sigma": self.sigma, "rate": self.rate, "seed": self.seed}


def _uniform(n, low, high, seed, k):
    return tf.random.uniform(n, low, high, seed=None if seed is None else seed * 16 + k)


@keras.saving.register_keras_serializable(package=PACKAGE)
class RandomAffine(keras.layers.Layer):
    """Augmentation: rotation, shift, shear, zoom and flips fused into one projective warp per batch.

    What ImageDataGenerator does per image in SciPy, here as one ``ImageProjectiveTransformV3`` over
    the batch: composing the transforms first means one interpolation (less blur) and one pass
    (Keras' separate Random* layers warp the batch once per transform). Training only.

    Args:
        rotation: max rotation as a fraction of a full turn.
        shift: max translation as a fraction of the side.
        shear: max shear factor.
        zoom: max zoom in/out fraction (x and y sampled independently, as ImageDataGenerator does).
        flip_horizontal, flip_vertical: mirror with probability 0.5.
        fill_mode: ``reflect``, ``nearest``, ``constant`` or ``wrap``.
        seed: op seed.
    """

    def __init__(
        self,
        rotation: float = 0.0,
        shift: float = 0.0,
        shear: float = 0.0,
        zoom: float = 0.0,
        flip_horizontal: bool = False,
        flip_vertical: bool = False,
        fill_mode: str = "reflect",
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if fill_mode not in ("reflect", "nearest", "constant", "wrap"):
            raise ValueError(
                f"RandomAffine: fill_mode must be reflect, nearest, constant or wrap, got {fill_mode!r}"
            )
        self.rotation, self.shift, self.shear, self.zoom = (
            float(rotation),
            float(shift),
            float(shear),
            float(zoom),
        )
        self.flip_horizontal, self.flip_vertical = bool(flip_horizontal), bool(flip_vertical)
        self.fill_mode, self.seed = fill_mode, seed

    def call(self, inputs, training=None):
        """Warp the batch with one random affine transform per image when training; identity otherwise."""
        if not training:
            return inputs
        x = tf.cast(inputs, tf.float32)
        shape = tf.shape(x)
        h, w = tf.cast(shape[1], tf.float32), tf.cast(shape[2], tf.float32)
        # One draw for all nine per-image numbers and the matrix in closed form: the warp kernel is
        # the cost; every extra small op (a draw, a stack, a 3×3 matmul) showed up at 64².
        u = tf.random.uniform(tf.stack([shape[0], 9]), seed=None if self.seed is None else self.seed * 16)
        lo = tf.constant([-self.rotation, -self.shear, -self.shear, 1.0 - self.zoom, 1.0 - self.zoom])
        hi = tf.constant([self.rotation, self.shear, self.shear, 1.0 + self.zoom, 1.0 + self.zoom])
        p = lo + (hi - lo) * u[:, :5]
        theta, shx, shy = p[:, 0] * 2.0 * 3.141592653589793, p[:, 1], p[:, 2]
        tx = (2.0 * u[:, 5] - 1.0) * self.shift * w
        ty = (2.0 * u[:, 6] - 1.0) * self.shift * h
        ax = p[:, 3] * (tf.where(u[:, 7] < 0.5, -1.0, 1.0) if self.flip_horizontal else 1.0)
        ay = p[:, 4] * (tf.where(u[:, 8] < 0.5, -1.0, 1.0) if self.flip_vertical else 1.0)
        c, sn = tf.cos(theta), tf.sin(theta)
        # Output pixel → input pixel (the op's convention): centre·(tx,ty) · rot · shear · scale ·
        # uncentre, i.e. A = R·Sh·diag(ax, ay) and offset b = centre + t − A·centre.
        a00, a01 = (c - sn * shy) * ax, (c * shx - sn) * ay
        a10, a11 = (sn + c * shy) * ax, (sn * shx + c) * ay
        cx, cy = (w - 1.0) / 2.0, (h - 1.0) / 2.0
        b0 = cx + tx - a00 * cx - a01 * cy
        b1 = cy + ty - a10 * cx - a11 * cy
        zero = tf.zeros_like(a00)
        transforms = tf.stack([a00, a01, b0, a10, a11, b1, zero, zero], axis=-1)
        return tf.raw_ops.ImageProjectiveTransformV3(
            images=x,
            transforms=transforms,
            output_shape=tf.shape(x)[1:3],
            fill_value=0.0,
            interpolation="BILINEAR",
            fill_mode=self.fill_mode.upper(),
        )

    def compute_output_shape(self, input_shape):
        """Unchanged: the warp keeps the image size."""
        return input_shape

    def get_config(self):
        """The layer config plus every transform range, the flips, ``fill_mode`` and ``seed``."""
        return {
            **super().get_config(),
            "rotation": self.rotation,
            "shift": self.shift,
            "shear": self.shear,
            "zoom": self.zoom,
            "flip_horizontal": self.flip_horizontal,
            "flip_vertical": self.flip_vertical,
            "fill_mode": self.fill_mode,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package=PACKAGE)
class RandomIntensity(keras.layers.Layer):
    """Augmentation: random brightness shift and contrast scaling per image, clipped to [0,1].

    Args:
        brightness: max additive change (fraction of the [0,1] range).
        contrast: max change of the contrast factor around each image's mean (1 ± contrast).
        seed: op seed.
    """

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.brightness, self.contrast, self.seed = float(brightness), float(contrast), seed

    def call(self, inputs, training=None):
        """Scale the contrast around each image's mean, shift the brightness, clip to [0,1] (training only)."""
        if not training:
            return inputs
        x = tf.cast(inputs, tf.float32)
        n = tf.shape(x)[:1]
        if self.contrast:
            factor = _uniform(n, 1.0 - self.contrast, 1.0 + self.contrast, self.seed, 9)[:, None, None, None]
            mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
            x = (x - mean) * factor + mean
        if self.brightness:
            x = x + _uniform(n, -self.brightness, self.brightness, self.seed, 10)[:, None, None, None]
        return tf.clip_by_value(x, 0.0, 1.0)

    def compute_output_shape(self, input_shape):
        """Unchanged: the intensity change is element-wise."""
        return input_shape

    def get_config(self):
        """The layer config plus ``brightness``, ``contrast`` and ``seed``."""
        return {
            **super().get_config(),
            "brightness": self.brightness,
            "contrast": self.contrast,
            "seed": self.seed,
        }
