"""The seed network built directly in TensorFlow/Keras and converted straight to TFLite: the
reference build that the export's speed goals are set against, measured on this machine.

    .tools/onnx2tf/bin/python benchmarks/keras_reference.py OUT_DIR [--stages 5] [--dim 384]
        [--heads 6] [--expand 2] [--kernels 11 7 3]

Runs in the converter environment (TensorFlow), not the project's: it imports nothing from
aslfr. Builds SEED-SPEC section 6 layer by layer the way the seed's Keras code does (Dense,
ZeroPadding1D + DepthwiseConv1D for the causal conv, BatchNormalization, ECA through a Conv1D
over the channel axis, multi-head attention from one qkv Dense), checks its trainable
parameter count against the spec (15,447,303 for 5 stages), and writes
OUT_DIR/keras_{float32,float16,int8}.tflite, each `serving_default(inputs [T, 600]) ->
outputs [T, 60]`: the network alone, on features. `benchmarks/inference.py --keras` times them
beside the project's export.
"""

from __future__ import annotations

import argparse
import math
import tempfile
from pathlib import Path

EXPECTED_PARAMETERS = {3: 9_497_577, 5: 15_447_303}


def build(stages: int, dim: int = 384, heads: int = 6, expand: int = 2, kernels=(11, 7, 3),
          features: int = 600, classes: int = 60, max_len: int = 1024):
    import numpy as np
    import tensorflow as tf
    import tf_keras as keras  # Keras 2, as in the seed's TensorFlow (its variables freeze into constants)
    from tf_keras import layers

    class ECA(layers.Layer):
        def __init__(self, kernel_size: int = 5) -> None:
            super().__init__()
            self.conv = layers.Conv1D(1, kernel_size, padding="same", use_bias=False)

        def call(self, x):
            w = tf.reduce_mean(x, axis=1)[..., None]            # [B, C, 1]
            w = tf.nn.sigmoid(tf.squeeze(self.conv(w), -1))     # [B, C]
            return x * w[:, None, :]

    class Attention(layers.Layer):
        def __init__(self) -> None:
            super().__init__()
            self.qkv = layers.Dense(3 * dim, use_bias=False)
            self.out = layers.Dense(dim, use_bias=False)

        def call(self, x):
            qkv = tf.transpose(tf.reshape(self.qkv(x), [tf.shape(x)[0], -1, heads, 3 * dim // heads]), [0, 2, 1, 3])
            q, k, v = tf.split(qkv, 3, axis=-1)
            attn = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) * dim ** -0.5, axis=-1)
            o = tf.transpose(tf.matmul(attn, v), [0, 2, 1, 3])
            return self.out(tf.reshape(o, [tf.shape(x)[0], -1, dim]))

    class Positions(layers.Layer):
        def __init__(self) -> None:
            super().__init__()
            half = dim // 2
            pos = np.arange(max_len, dtype=np.float64)[:, None]
            angle = pos / np.power(10000.0, np.arange(half, dtype=np.float64) / half)[None]
            self.table = tf.constant(np.concatenate([np.sin(angle), np.cos(angle)], -1).astype(np.float32))

        def call(self, x):
            return x + self.table[: tf.shape(x)[1]]

    def conv_block(x, k):
        h = layers.Dense(dim * expand, activation="swish")(x)
        h = layers.ZeroPadding1D((k - 1, 0))(h)
        h = layers.DepthwiseConv1D(k, use_bias=False)(h)
        h = layers.BatchNormalization(momentum=0.95)(h)
        h = ECA()(h)
        h = layers.Dense(dim)(h)
        h = layers.Dropout(0.2, noise_shape=(None, 1, 1))(h)
        return layers.Add()([x, h])

    def transformer_block(x):
        h = Attention()(layers.LayerNormalization(epsilon=1e-6)(x))
        x = layers.Add()([x, layers.Dropout(0.2, noise_shape=(None, 1, 1))(h)])
        h = layers.Dense(dim * expand, use_bias=False, activation="swish")(layers.LayerNormalization(epsilon=1e-6)(x))
        h = layers.Dense(dim, use_bias=False)(h)
        return layers.Add()([x, layers.Dropout(0.2, noise_shape=(None, 1, 1))(h)])

    inp = keras.Input((None, features))
    x = layers.BatchNormalization(momentum=0.95)(layers.Dense(dim, use_bias=False)(inp))
    for s in range(stages):
        for k in kernels:
            x = conv_block(x, k)
        if s == 0:
            x = Positions()(x)
        x = transformer_block(x)
    x = layers.Dense(dim * expand, activation="relu")(x)
    x = layers.Dropout(0.8)(x)
    return keras.Model(inp, layers.Dense(classes)(x))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--stages", type=int, default=5)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--heads", type=int, default=6)
    ap.add_argument("--expand", type=int, default=2)
    ap.add_argument("--kernels", type=int, nargs="+", default=[11, 7, 3])
    a = ap.parse_args()
    seed_shape = (a.dim, a.heads, a.expand, a.kernels) == (384, 6, 2, [11, 7, 3])
    import tensorflow as tf
    import tf_keras

    tf_keras.utils.set_random_seed(0)
    model = build(a.stages, a.dim, a.heads, a.expand, tuple(a.kernels))
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    print(f"keras build, {a.stages} stages of width {a.dim}: {trainable:,} trainable parameters")
    if seed_shape and a.stages in EXPECTED_PARAMETERS and trainable != EXPECTED_PARAMETERS[a.stages]:
        raise SystemExit(f"the Keras build has {trainable:,} parameters, the spec {EXPECTED_PARAMETERS[a.stages]:,}")

    class Serving(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, 600], tf.float32, name="inputs")])
        def serve(self, inputs):
            return {"outputs": self.model(inputs[None], training=False)[0]}

    a.out.mkdir(parents=True, exist_ok=True)
    serving = Serving()
    with tempfile.TemporaryDirectory(prefix="aslfr-keras-") as tmp:
        # through a SavedModel, as the project's converter does: the weights become constants
        tf.saved_model.save(serving, tmp, signatures={"serving_default": serving.serve})
        for variant in ("float32", "float16", "int8"):
            conv = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=["serving_default"])
            conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
            if variant != "float32":
                conv.optimizations = [tf.lite.Optimize.DEFAULT]
            if variant == "float16":
                conv.target_spec.supported_types = [tf.float16]
            data = conv.convert()
            target = a.out / f"keras_{variant}.tflite"
            target.write_bytes(data)
            print(f"{target} {len(data)} bytes", flush=True)


if __name__ == "__main__":
    main()
