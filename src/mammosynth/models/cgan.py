"""Class-conditional GANs for benign / malignant mass crops.

Two ``keras.Model`` subclasses share one interface (``compile(d_optimizer, g_optimizer)``,
``train_step``, ``metrics``, ``get_config``, ``call([z, labels]) -> images in [0,1]``):

* `SeedCGAN` — the student study's architecture, kept as a faithful baseline: noise and a label
  embedding are mapped by ``Dense`` to ``s0×s0×width`` maps, upsampled by stride-2
  ``Conv2DTranspose`` layers (five for 224² = 7·2⁵, the study's 7×7×128 → 224×224×3), a label-
  conditioned discriminator that sees the image plus a label plane, binary cross-entropy, and
  alternating D-then-G Adam(2e-4, β₁=0.5) updates.
* `StableCGAN` — the default. See its docstring for the literature choices.

Both take training batches ``(images, labels)`` with images (B,S,S,1) float in [0,1] (a prepared
set as read by `mammosynth.data.shards.read_split`) and work in [-1,1] internally.

Image size → architecture: `upsampling_plan` halves the image size while it is even and larger
than 7, so 224 = 7·2⁵ (five upsamplings, the study's preset), 64 = 4·2⁴, 32 = 4·2³, 96 = 6·2⁴.
The generator starts at ``s0×s0`` and doubles ``k`` times; the discriminator halves ``k`` times.

The training step is written against TensorFlow (``tf.GradientTape``), the Keras backend this
project ships with.
"""

from __future__ import annotations

from typing import Any

import keras
import tensorflow as tf
from keras import layers

from mammosynth.registry import GAN_KINDS as KINDS  # the one list of kinds (config reads it too)

NUM_CLASSES = 2


def upsampling_plan(image_size: int) -> tuple[int, int]:
    """Start size ``s0`` and number ``k`` of stride-2 upsamplings with ``s0 * 2**k == image_size``.

    Halves the size while it is even and above 7, so the study's 224 keeps its 7×7 start.

    Raises:
        ValueError: fewer than two upsamplings would fit (odd or tiny image sizes).
    """
    size, k = int(image_size), 0
    while size % 2 == 0 and size > 7:
        size //= 2
        k += 1
    if k < 2 or size > 16:
        raise ValueError(
            f"image_size {image_size} does not factor as s0·2^k with s0 ≤ 16 and k ≥ 2 "
            "(use e.g. 32, 64, 96, 128 or 224)"
        )
    return size, k


def _check_shapes(image_size: int, latent_dim: int, channels: int) -> None:
    if channels not in (1, 3):
        raise ValueError(f"expected 1 or 3 channels, got {channels}")
    if latent_dim < 1:
        raise ValueError(f"latent_dim must be positive, got {latent_dim}")
    upsampling_plan(image_size)


def default_base_width(image_size: int) -> int:
    """Finest-level width of `StableCGAN` by image size.

    Every level costs about the same (pixels × C_in × C_out is constant when widths double per
    halving), so the base width sets the cost quadratically. Measured on 2 shared CPU cores at 64²,
    batch 32: base 8 ran 0.28–0.38 s/step, base 4 0.12 s/step; 4 keeps the embedded preset
    (1500 steps) within a few minutes. Larger images run on GPUs and get wider networks.
    """
    if image_size <= 64:
        return 4
    return 8 if image_size <= 128 else 16


def _widths(k: int, base: int, cap: int) -> list[int]:
    """Channel widths from the coarsest (index 0) to the finest of k+1 resolutions."""
    return [min(cap, base * 2 ** (k - i)) for i in range(k + 1)]


def diff_augment(
    x: tf.Tensor, seed_generator: keras.random.SeedGenerator, translation: float = 0.125, cutout: float = 0.5
) -> tf.Tensor:
    """DiffAugment (Zhao et al. 2020) for gray images in [-1,1], differentiable in ``x``.

    Brightness, contrast, translation (zero fill) and cutout, drawn independently per sample.
    Applying the same random family to real and fake images keeps the discriminator from
    memorising a few hundred training crops without leaking augmentations into the generator.
    """
    batch = tf.shape(x)[0]
    size = x.shape[1]
    # One draw for all six per-sample numbers: each SeedGenerator call adds graph and trace time.
    u = keras.random.uniform((batch, 6), seed=seed_generator)
    x = x + (u[:, 0, None, None, None] - 0.5)
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    x = (x - mean) * (u[:, 1, None, None, None] + 0.5) + mean

    shift = int(size * translation + 0.5)
    if shift > 0:
        offsets = tf.cast(tf.floor(u[:, 2:4] * (2 * shift + 1)), "int32") - shift  # in [-shift, shift]
        idx = tf.range(size)[None, :]
        # +1 because of the one-pixel zero border: indices clipped onto it read zeros.
        rows = tf.clip_by_value(idx + offsets[:, :1], -1, size) + 1
        cols = tf.clip_by_value(idx + offsets[:, 1:], -1, size) + 1
        padded = tf.pad(x, [[0, 0], [1, 1], [1, 1], [0, 0]])
        x = tf.gather(padded, rows, axis=1, batch_dims=1)
        x = tf.gather(x, cols, axis=2, batch_dims=1)

    half = int(size * cutout / 2 + 0.5)
    if half > 0:
        centres = tf.cast(tf.floor(u[:, 4:6] * size), "int32")
        grid = tf.range(size)[None, :]
        outside_r = tf.abs(grid - centres[:, :1]) >= half  # (B,S)
        outside_c = tf.abs(grid - centres[:, 1:]) >= half
        keep = tf.logical_or(outside_r[:, :, None], outside_c[:, None, :])
        x = x * tf.cast(keep, x.dtype)[..., None]
    return x


class _ConditionalGAN(keras.Model):
    """Shared plumbing: submodels, metrics, sampling, optimiser handling."""

    kind = ""

    def __init__(
        self,
        image_size: int = 64,
        latent_dim: int = 64,
        channels: int = 1,
        num_classes: int = NUM_CLASSES,
        seed: int = 0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        _check_shapes(image_size, latent_dim, channels)
        self.image_size = int(image_size)
        self.latent_dim = int(latent_dim)
        self.channels = int(channels)
        self.num_classes = int(num_classes)
        self.seed = int(seed)
        self.start_size, self.n_upsamplings = upsampling_plan(self.image_size)
        self.seed_generator = keras.random.SeedGenerator(self.seed)
        self.d_loss_tracker = keras.metrics.Mean(name="d_loss")
        self.g_loss_tracker = keras.metrics.Mean(name="g_loss")
        self.d_real_tracker = keras.metrics.Mean(name="d_real")
        self.d_fake_tracker = keras.metrics.Mean(name="d_fake")

    # -- public interface -------------------------------------------------------------------
    @property
    def metrics(self):
        return [self.d_loss_tracker, self.g_loss_tracker, self.d_real_tracker, self.d_fake_tracker]

    def compile(
        self, d_optimizer: keras.optimizers.Optimizer, g_optimizer: keras.optimizers.Optimizer, **kwargs
    ):
        """Attach one optimiser per network (wrap in ``LossScaleOptimizer`` under mixed precision)."""
        super().compile(**kwargs)
        self.d_optimizer = d_optimizer
        self.g_optimizer = g_optimizer
        d_optimizer.build(self.discriminator.trainable_variables)
        g_optimizer.build(self.generator.trainable_variables)

    def get_config(self) -> dict[str, Any]:
        return {
            "image_size": self.image_size,
            "latent_dim": self.latent_dim,
            "channels": self.channels,
            "num_classes": self.num_classes,
            "seed": self.seed,
            "name": self.name,
        }

    @property
    def sampling_generator(self) -> keras.Model:
        """The generator used to sample (the EMA copy where there is one), output in [-1,1]."""
        return self.generator

    def call(self, inputs, training=False):
        """``[z (B,latent_dim), labels (B,)]`` → images (B,S,S,channels) in [0,1]."""
        z, labels = inputs
        return (self.sampling_generator([z, labels], training=training) + 1.0) * 0.5

    def sampler(self) -> keras.Model:
        """A standalone float32 functional model ``[z, labels] → [0,1]`` images, for saving and serving.

        Rebuilt under a float32 policy so a generator trained with mixed precision on a GPU samples
        correctly on CPUs (weights are float32 under both policies).
        """
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy("float32")
        try:
            generator = self._build_generator("generator")
            generator.set_weights(self.sampling_generator.get_weights())
            z = keras.Input((self.latent_dim,), name="z")
            y = keras.Input((), dtype="int32", name="label")
            out = generator([z, y], training=False)
            out = layers.Rescaling(0.5, offset=0.5, name="to_unit_range")(out)
            return keras.Model([z, y], out, name=f"{self.kind}-sampler")
        finally:
            keras.config.set_dtype_policy(previous)

    # -- helpers ----------------------------------------------------------------------------
    def _noise(self, batch):
        return keras.random.normal((batch, self.latent_dim), seed=self.seed_generator)

    @staticmethod
    def _apply(optimizer, tape, scaled_loss, variables):
        grads = tape.gradient(scaled_loss, variables)
        optimizer.apply_gradients(zip(grads, variables, strict=True))

    @staticmethod
    def _scaled(optimizer, loss):
        """Loss-scaled under ``LossScaleOptimizer`` (must run inside the tape)."""
        return optimizer.scale_loss(loss)

    def _update_metrics(self, d_loss, g_loss, d_real, d_fake):
        self.d_loss_tracker.update_state(d_loss)
        self.g_loss_tracker.update_state(g_loss)
        self.d_real_tracker.update_state(tf.reduce_mean(tf.cast(d_real, "float32")))
        self.d_fake_tracker.update_state(tf.reduce_mean(tf.cast(d_fake, "float32")))
        return {m.name: m.result() for m in self.metrics}

    def state_variables(self) -> list:
        """Every variable a resumable checkpoint must hold, in a fixed order."""
        out = list(self.generator.variables) + list(self.discriminator.variables)
        if self.sampling_generator is not self.generator:
            out += list(self.sampling_generator.variables)
        out += [self.seed_generator.state]
        for opt in (getattr(self, "d_optimizer", None), getattr(self, "g_optimizer", None)):
            if opt is not None:
                out += list(opt.variables)
        return out


@keras.saving.register_keras_serializable(package="mammosynth")
class SeedCGAN(_ConditionalGAN):
    """The study's cGAN (faithful baseline).

    Brownlee-style label-embedding generator
    (noise → Dense s0·s0·width; label → Embedding(50) → Dense s0·s0 plane; concatenated),
    ``k`` Conv2DTranspose(width, 4, stride 2) + LeakyReLU(0.2), Conv2D(channels, 7, tanh);
    discriminator on image ⊕ label plane with Conv2D(width, 3, stride 2) + LeakyReLU, dropout 0.4,
    a sigmoid logit and binary cross-entropy.

    Args:
        image_size: output side (see `upsampling_plan`).
        latent_dim: noise size.
        channels: 1 (gray, default) or 3 (the study's RGB output).
        width: filters per layer; the study's 128 by default at ≥128 px; 32 below so the
            embedded 64² preset trains on two CPU cores.
        seed: seed of the in-graph noise.
    """

    kind = "seed-cgan"

    def __init__(
        self,
        image_size: int = 64,
        latent_dim: int = 64,
        channels: int = 1,
        width: int | None = None,
        **kwargs,
    ):
        super().__init__(image_size, latent_dim, channels, **kwargs)
        self.width = int(width or (128 if self.image_size >= 128 else 32))
        self.generator = self._build_generator("generator")
        self.discriminator = self._build_discriminator()
        self.bce = keras.losses.BinaryCrossentropy(from_logits=True)
        self.built = True

    def get_config(self):
        """The base config plus ``width``."""
        return {**super().get_config(), "width": self.width}

    def _build_generator(self, name: str) -> keras.Model:
        s0, w = self.start_size, self.width
        z = keras.Input((self.latent_dim,), name="z")
        y = keras.Input((), dtype="int32", name="label")
        lab = layers.Embedding(self.num_classes, 50)(y)
        lab = layers.Reshape((s0, s0, 1))(layers.Dense(s0 * s0)(lab))
        h = layers.LeakyReLU(0.2)(layers.Dense(s0 * s0 * w)(z))
        h = layers.Concatenate()([layers.Reshape((s0, s0, w))(h), lab])
        for _ in range(self.n_upsamplings):
            h = layers.Conv2DTranspose(w, 4, strides=2, padding="same")(h)
            h = layers.LeakyReLU(0.2)(h)
        out = layers.Conv2D(self.channels, 7, padding="same")(h)
        out = layers.Activation("tanh", dtype="float32")(out)
        return keras.Model([z, y], out, name=name)

    def _build_discriminator(self) -> keras.Model:
        s = self.image_size
        x = keras.Input((s, s, self.channels), name="image")
        y = keras.Input((), dtype="int32", name="label")
        lab = layers.Embedding(self.num_classes, 50)(y)
        lab = layers.Reshape((s, s, 1))(layers.Dense(s * s)(lab))
        h = layers.Concatenate()([x, lab])
        for _ in range(self.n_upsamplings):
            h = layers.Conv2D(self.width, 3, strides=2, padding="same")(h)
            h = layers.LeakyReLU(0.2)(h)
        h = layers.Dropout(0.4)(layers.Flatten()(h))
        out = layers.Dense(1, dtype="float32")(h)
        return keras.Model([x, y], out, name="seed_discriminator")

    def train_step(self, data):
        """One step: a discriminator update on real vs fake (BCE), then a generator update on fresh noise."""
        real, labels = data
        real = tf.cast(real, "float32") * 2.0 - 1.0  # layers autocast under mixed precision
        labels = tf.cast(labels, "int32")
        batch = tf.shape(real)[0]
        if real.shape[-1] != self.channels:  # gray prepared sets feed the study's RGB variant
            real = tf.repeat(real, self.channels, axis=-1)

        fake = self.generator([self._noise(batch), labels], training=True)
        with tf.GradientTape() as tape:
            d_real = self.discriminator([real, labels], training=True)
            d_fake = self.discriminator([fake, labels], training=True)
            d_loss = self.bce(tf.ones_like(d_real), d_real) + self.bce(tf.zeros_like(d_fake), d_fake)
            d_scaled = self._scaled(self.d_optimizer, d_loss)
        self._apply(self.d_optimizer, tape, d_scaled, self.discriminator.trainable_variables)

        with tf.GradientTape() as tape:
            fake = self.generator([self._noise(batch), labels], training=True)
            d_gen = self.discriminator([fake, labels], training=True)
            g_loss = self.bce(tf.ones_like(d_gen), d_gen)
            g_scaled = self._scaled(self.g_optimizer, g_loss)
        self._apply(self.g_optimizer, tape, g_scaled, self.generator.trainable_variables)
        return self._update_metrics(d_loss, g_loss, d_real, d_fake)


@keras.saving.register_keras_serializable(package="mammosynth")
class SumPool(layers.Layer):
    """Global sum pooling (the projection discriminator's feature reduction)."""

    def call(self, x):
        """Sum each feature map over height and width: (B,H,W,C) → (B,C)."""
        return tf.reduce_sum(x, axis=[1, 2])


@keras.saving.register_keras_serializable(package="mammosynth")
class StableCGAN(_ConditionalGAN):
    """The default conditional GAN, chosen for a few hundred crops and a CPU budget.

    * **Projection discriminator** (Miyato & Koyama 2018): ``D(x,y) = ψ(φ(x)) + ⟨e_y, φ(x)⟩``
      conditions by an inner product with a class embedding instead of concatenating a label
      plane, which is both better-founded (it is the form of the optimal conditional D) and
      cheaper.
    * **Spectral normalisation** on every discriminator layer (Miyato et al. 2018) bounds D's
      Lipschitz constant; with the **hinge loss** this is the SN-GAN/BigGAN recipe that fixed the
      mode collapse and oscillation the study reports.
      (Keras's ``SpectralNormalization`` writes ``W/σ`` back into the kernel on every training
      call, i.e. it projects after each update rather than reparameterising; the Lipschitz bound
      is the same.)
    * **DiffAugment** (Zhao et al. 2020) on real and fake inputs to D: the standard remedy for
      discriminator over-fitting with ~10² images per class.
    * **EMA of generator weights** (Yazıcı et al. 2019; Karras et al.) — samples come from the
      averaged generator, which is smoother and less dependent on the stopping step.
    * **Simultaneous update**: one generator pass and one discriminator pass per half feed both
      losses (two gradients from one tape pair): no second generator pass, and the generator's
      gradient goes back through D on the fakes only.
    * **R1 penalty** (Mescheder et al. 2018) is available (``r1_gamma``) but off by default: it
      needs a second backward pass through D, and SN + hinge + DiffAugment were stable without it
      at 32–64 px. Turn it on for the 224² cluster preset if D grows over-confident.
    * Class-balanced batches come from the data sampler in `mammosynth.gan`.

    Args:
        image_size: output side (see `upsampling_plan`).
        latent_dim: noise size.
        channels: 1 (gray, default) or 3.
        base_width: channels at the finest resolution; they double per coarser level up to
            ``max_width``. The default (`default_base_width`) keeps 64² training in budget on CPU.
        max_width: channel cap.
        ema_decay: generator EMA decay (warmed up as ``min(decay, (1+t)/(10+t))``).
        r1_gamma: R1 weight on real images (0 = off).
        augment: apply DiffAugment.
    """

    kind = "stable-cgan"

    def __init__(
        self,
        image_size: int = 64,
        latent_dim: int = 64,
        channels: int = 1,
        base_width: int | None = None,
        max_width: int = 256,
        ema_decay: float = 0.999,
        r1_gamma: float = 0.0,
        augment: bool = True,
        **kwargs,
    ):
        super().__init__(image_size, latent_dim, channels, **kwargs)
        self.base_width = int(base_width or default_base_width(self.image_size))
        self.max_width = int(max_width)
        self.ema_decay = float(ema_decay)
        self.r1_gamma = float(r1_gamma)
        self.augment = bool(augment)
        self.generator = self._build_generator("generator")
        self.ema_generator = self._build_generator("ema_generator")
        self.ema_generator.set_weights(self.generator.get_weights())
        self.discriminator = self._build_discriminator()
        self.ema_step = keras.Variable(0, dtype="int64", trainable=False, name="ema_step")
        self.built = True

    def get_config(self):
        """The base config plus the widths, ``ema_decay``, ``r1_gamma`` and ``augment``."""
        return {
            **super().get_config(),
            "base_width": self.base_width,
            "max_width": self.max_width,
            "ema_decay": self.ema_decay,
            "r1_gamma": self.r1_gamma,
            "augment": self.augment,
        }

    @property
    def sampling_generator(self):
        """The EMA generator: samples come from the averaged weights."""
        return self.ema_generator

    def state_variables(self):
        """The base state plus the EMA step counter, so a resumed run continues the EMA warm-up."""
        return super().state_variables() + [self.ema_step]

    def _build_generator(self, name: str) -> keras.Model:
        s0, k = self.start_size, self.n_upsamplings
        widths = _widths(k, self.base_width, self.max_width)
        z = keras.Input((self.latent_dim,), name="z")
        y = keras.Input((), dtype="int32", name="label")
        lab = layers.Embedding(self.num_classes, self.latent_dim)(y)
        h = layers.Concatenate()([z, lab])
        h = layers.Dense(s0 * s0 * widths[0], use_bias=False)(h)
        h = layers.ReLU()(layers.BatchNormalization()(h))
        h = layers.Reshape((s0, s0, widths[0]))(h)
        for w in widths[1:]:
            # kernel 4 with stride 2: divisible, so no checkerboard from uneven overlap
            h = layers.Conv2DTranspose(w, 4, strides=2, padding="same", use_bias=False)(h)
            h = layers.ReLU()(layers.BatchNormalization()(h))
        out = layers.Conv2D(self.channels, 3, padding="same")(h)
        out = layers.Activation("tanh", dtype="float32")(out)
        return keras.Model([z, y], out, name=name)

    def _build_discriminator(self) -> keras.Model:
        s, k = self.image_size, self.n_upsamplings
        widths = _widths(k, self.base_width, self.max_width)  # coarse → fine
        x = keras.Input((s, s, self.channels), name="image")
        y = keras.Input((), dtype="int32", name="label")
        h = x
        for w in reversed(widths[:-1]):  # fine → coarse: S/2 ... s0
            h = layers.SpectralNormalization(layers.Conv2D(w, 4, strides=2, padding="same"))(h)
            h = layers.LeakyReLU(0.2)(h)
        h = layers.SpectralNormalization(layers.Conv2D(widths[0], 3, padding="same"))(h)
        h = layers.LeakyReLU(0.2)(h)
        feat = SumPool()(h)
        uncond = layers.SpectralNormalization(layers.Dense(1))(feat)
        embed = layers.Embedding(self.num_classes, widths[0])(y)
        proj = layers.Dot(axes=1)([embed, feat])
        out = layers.Add(dtype="float32")([uncond, proj])
        return keras.Model([x, y], out, name="projection_discriminator")

    def _aug(self, x):
        return diff_augment(x, self.seed_generator) if self.augment else x

    def train_step(self, data):
        """One simultaneous step: hinge losses for D and G from one forward pass, optional R1, then the EMA update."""
        real, labels = data
        real = tf.cast(real, "float32") * 2.0 - 1.0  # layers autocast under mixed precision
        labels = tf.cast(labels, "int32")
        batch = tf.shape(real)[0]
        if real.shape[-1] != self.channels:
            real = tf.repeat(real, self.channels, axis=-1)

        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            fake = self.generator([self._noise(batch), labels], training=True)
            real_a, fake_a = tf.split(
                self._aug(tf.concat([real, tf.cast(fake, real.dtype)], axis=0)), 2, axis=0
            )
            # Two calls on one spectral-normalised D: the first (training) takes this step's power
            # iteration and writes W/σ, the second reads it, so both halves see the same D as one call on
            # the concatenated batch would; the generator's gradient then flows back through the fake
            # half only (a single call would backpropagate zeros through D for the real half too).
            d_real = tf.cast(self.discriminator([real_a, labels], training=True), "float32")
            d_fake = tf.cast(self.discriminator([fake_a, labels], training=False), "float32")
            d_loss = tf.reduce_mean(tf.nn.relu(1.0 - d_real)) + tf.reduce_mean(tf.nn.relu(1.0 + d_fake))
            g_loss = -tf.reduce_mean(d_fake)
            if self.r1_gamma > 0:
                with tf.GradientTape() as r1_tape:
                    r1_tape.watch(real)
                    r_sum = tf.reduce_sum(self.discriminator([real, labels], training=False))
                grad = r1_tape.gradient(r_sum, real)
                r1 = tf.reduce_mean(tf.reduce_sum(tf.square(tf.cast(grad, "float32")), [1, 2, 3]))
                d_loss += 0.5 * self.r1_gamma * r1
            d_scaled = self._scaled(self.d_optimizer, d_loss)
            g_scaled = self._scaled(self.g_optimizer, g_loss)
        self._apply(self.d_optimizer, d_tape, d_scaled, self.discriminator.trainable_variables)
        self._apply(self.g_optimizer, g_tape, g_scaled, self.generator.trainable_variables)
        self._update_ema()
        return self._update_metrics(d_loss, g_loss, d_real, d_fake)

    def _update_ema(self):
        self.ema_step.assign_add(1)
        t = tf.cast(self.ema_step, "float32")
        decay = tf.minimum(self.ema_decay, (1.0 + t) / (10.0 + t))
        for ema_w, w in zip(
            self.ema_generator.trainable_variables, self.generator.trainable_variables, strict=True
        ):
            ema_w.assign(decay * ema_w + (1.0 - decay) * tf.cast(w, ema_w.dtype))
        # BatchNorm statistics are not averaged: the EMA weights use the live running stats.
        for ema_w, w in zip(
            self.ema_generator.non_trainable_variables, self.generator.non_trainable_variables, strict=True
        ):
            ema_w.assign(w)


@keras.saving.register_keras_serializable(package="mammosynth")
class ConditionalVAE(_ConditionalGAN):
    """A small class-conditional VAE (Sohn et al. 2015) behind the same interface.

    A non-adversarial comparison: it cannot collapse or oscillate, at the price of blurrier samples.

    The decoder is `StableCGAN`'s generator (``generator``, so sampling, saving and synthesis are
    shared); the encoder (in the ``discriminator`` slot, trained by ``d_optimizer``) mirrors the
    discriminator without spectral normalisation and outputs ``(μ, log σ²)`` from image features
    and a class embedding. Loss: per-image sum of squared error in [-1,1] + ``beta`` × KL.
    Metrics: ``loss``, ``recon``, ``kl``.

    Args:
        image_size, latent_dim, channels: as for the GANs.
        base_width, max_width: as for `StableCGAN`.
        beta: KL weight.
    """

    kind = "cvae"

    def __init__(
        self,
        image_size: int = 64,
        latent_dim: int = 64,
        channels: int = 1,
        base_width: int | None = None,
        max_width: int = 256,
        beta: float = 1.0,
        **kwargs,
    ):
        super().__init__(image_size, latent_dim, channels, **kwargs)
        self.base_width = int(base_width or default_base_width(self.image_size))
        self.max_width = int(max_width)
        self.beta = float(beta)
        self.generator = StableCGAN._build_generator(self, "generator")
        self.discriminator = self._build_encoder()
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.recon_tracker = keras.metrics.Mean(name="recon")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.built = True

    def _build_generator(self, name: str) -> keras.Model:
        return StableCGAN._build_generator(self, name)

    @property
    def metrics(self):
        """The loss, reconstruction and KL trackers (the VAE has no D/G losses)."""
        return [self.loss_tracker, self.recon_tracker, self.kl_tracker]

    def get_config(self):
        """The base config plus the widths and ``beta``."""
        return {
            **super().get_config(),
            "base_width": self.base_width,
            "max_width": self.max_width,
            "beta": self.beta,
        }

    def _build_encoder(self) -> keras.Model:
        s, k = self.image_size, self.n_upsamplings
        widths = _widths(k, self.base_width, self.max_width)
        x = keras.Input((s, s, self.channels), name="image")
        y = keras.Input((), dtype="int32", name="label")
        h = x
        for w in reversed(widths[:-1]):
            h = layers.LeakyReLU(0.2)(layers.Conv2D(w, 4, strides=2, padding="same")(h))
        h = layers.GlobalAveragePooling2D()(h)
        h = layers.Concatenate()([h, layers.Embedding(self.num_classes, widths[0])(y)])
        h = layers.Dense(2 * self.latent_dim, dtype="float32")(h)
        return keras.Model([x, y], h, name="encoder")

    def train_step(self, data):
        """One step: encode, reparameterise, decode; the same loss (reconstruction + beta × KL) trains both parts."""
        real, labels = data
        real = tf.cast(real, "float32") * 2.0 - 1.0
        labels = tf.cast(labels, "int32")
        if real.shape[-1] != self.channels:
            real = tf.repeat(real, self.channels, axis=-1)
        eps = self._noise(tf.shape(real)[0])
        with tf.GradientTape() as e_tape, tf.GradientTape() as g_tape:
            stats = self.discriminator([real, labels], training=True)
            mu, logvar = tf.split(stats, 2, axis=-1)
            logvar = tf.clip_by_value(logvar, -10.0, 10.0)
            z = mu + tf.exp(0.5 * logvar) * tf.cast(eps, mu.dtype)
            recon = tf.cast(self.generator([z, labels], training=True), "float32")
            recon_loss = tf.reduce_mean(tf.reduce_sum(tf.square(recon - real), axis=[1, 2, 3]))
            kl = tf.reduce_mean(-0.5 * tf.reduce_sum(1.0 + logvar - tf.square(mu) - tf.exp(logvar), axis=-1))
            loss = recon_loss + self.beta * kl
            e_scaled = self._scaled(self.d_optimizer, loss)
            g_scaled = self._scaled(self.g_optimizer, loss)
        self._apply(self.d_optimizer, e_tape, e_scaled, self.discriminator.trainable_variables)
        self._apply(self.g_optimizer, g_tape, g_scaled, self.generator.trainable_variables)
        self.loss_tracker.update_state(loss)
        self.recon_tracker.update_state(recon_loss)
        self.kl_tracker.update_state(kl)
        return {m.name: m.result() for m in self.metrics}


def build_gan(
    kind: str, image_size: int, latent_dim: int, channels: int = 1, seed: int = 0, **kwargs
) -> _ConditionalGAN:
    """Build (not compile) a conditional GAN.

    Args:
        kind: ``"seed-cgan"`` (the study), ``"stable-cgan"`` (default elsewhere) or ``"cvae"``
            (a conditional VAE behind the same interface).
        image_size: output side S (see `upsampling_plan`).
        latent_dim: noise size.
        channels: 1 (gray) or 3.
        seed: seed of in-graph randomness (noise, augmentation).
        **kwargs: architecture options of the chosen class (``width``, ``base_width``, ...).

    Raises:
        ValueError: unknown kind, channel count or image size.
    """
    classes = {"seed-cgan": SeedCGAN, "stable-cgan": StableCGAN, "cvae": ConditionalVAE}
    if kind not in classes:
        raise ValueError(f"unknown GAN kind {kind!r}; choose one of: {', '.join(KINDS)}")
    return classes[kind](image_size=image_size, latent_dim=latent_dim, channels=channels, seed=seed, **kwargs)


def default_optimizers(
    kind: str, learning_rate: float
) -> tuple[keras.optimizers.Optimizer, keras.optimizers.Optimizer]:
    """``(d_optimizer, g_optimizer)`` for a GAN kind at a base learning rate.

    The study's Adam(lr, β₁=0.5) for the seed cGAN; for the stable cGAN Adam(β₁=0, β₂=0.99) with a 2×
    discriminator rate (TTUR, Heusel et al. 2017); for the VAE plain Adam at 5× the rate (encoder,
    decoder): a likelihood objective tolerates it.
    """
    if kind == "cvae":
        return keras.optimizers.Adam(5 * learning_rate), keras.optimizers.Adam(5 * learning_rate)
    if kind == "seed-cgan":
        return (
            keras.optimizers.Adam(learning_rate, beta_1=0.5),
            keras.optimizers.Adam(learning_rate, beta_1=0.5),
        )
    return (
        keras.optimizers.Adam(2 * learning_rate, beta_1=0.0, beta_2=0.99),
        keras.optimizers.Adam(learning_rate, beta_1=0.0, beta_2=0.99),
    )
