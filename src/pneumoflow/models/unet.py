"""The seed study's U-Net (Keras 3 functional), its Dice loss and metrics.

Input (B, S, S, 1) float32 in [0, 1], S divisible by 16; output (B, S, S, 2)
softmax over (background, opacity). Masks are one-hot with the same shape.
"""

from __future__ import annotations

import keras
from keras import layers, ops

SMOOTH = 1e-6


def _batch_norm() -> layers.BatchNormalization:
    # The first layers' activations vary by ~1e-4. Keras' defaults (moving variance
    # starting at 1, momentum 0.99) need thousands of steps to forget that start, so
    # inference-mode predictions of a short run are garbage; starting at 0 with
    # momentum 0.9, the moving statistics are within 10% after ~20 steps.
    return layers.BatchNormalization(momentum=0.9, moving_variance_initializer="zeros")


def check_img_size(img_size: int) -> None:
    """The architecture halves the size 4 times and doubles it back 4 times."""
    if img_size % 16:
        raise ValueError(f"models.unet.img_size must be divisible by 16 (4 halvings), got {img_size}")


def build_unet(img_size: int, num_classes: int = 2) -> keras.Model:
    """Entry conv, 3 residual down blocks, 4 residual up blocks, softmax head."""
    check_img_size(img_size)
    inputs = keras.Input(shape=(img_size, img_size, 1))
    x = layers.Conv2D(32, 3, strides=2, padding="same")(inputs)
    x = _batch_norm()(x)
    x = layers.Activation("relu")(x)
    previous = x
    for filters in (64, 128, 256):
        for _ in range(2):
            x = layers.Activation("relu")(x)
            x = layers.SeparableConv2D(filters, 3, padding="same")(x)
            x = _batch_norm()(x)
        x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
        # project residual to the new depth and size
        residual = layers.Conv2D(filters, 1, strides=2, padding="same")(previous)
        x = previous = layers.add([x, residual])
    for filters in (256, 128, 64, 32):
        for _ in range(2):
            x = layers.Activation("relu")(x)
            x = layers.Conv2DTranspose(filters, 3, padding="same")(x)
            x = _batch_norm()(x)
        x = layers.UpSampling2D(2)(x)
        residual = layers.Conv2D(filters, 1, padding="same")(layers.UpSampling2D(2)(previous))
        x = previous = layers.add([x, residual])
    # float32 softmax even under mixed precision: float16 probabilities break the Dice sums
    outputs = layers.Conv2D(num_classes, 3, activation="softmax", padding="same", dtype="float32")(x)
    return keras.Model(inputs, outputs, name="unet")


def dice_coefficient(y_true, y_pred, smooth: float = SMOOTH):
    """Dice of the foreground channel over the whole batch.

    Foreground only: background dominates the pixel count and would make any
    prediction look good. Two empty masks give (0 + s) / (0 + s) = 1.
    """
    true = ops.cast(y_true[..., 1], "float32")
    pred = ops.cast(y_pred[..., 1], "float32")
    intersection = ops.sum(true * pred)
    return (2.0 * intersection + smooth) / (ops.sum(true) + ops.sum(pred) + smooth)


def dice_loss(y_true, y_pred):
    """1 - Dice on the foreground channel (the seed study's loss)."""
    return 1.0 - dice_coefficient(y_true, y_pred)


def compile_unet(model: keras.Model, lr: float) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=lr),
        loss=dice_loss,
        metrics=[dice_coefficient, keras.metrics.OneHotMeanIoU(num_classes=2, name="mean_iou")],
    )
    return model
