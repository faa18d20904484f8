"""A training step of the seed network built in TensorFlow/Keras, on this machine: the reference
that `train_step.py --keras` sets the project's PyTorch step beside.

    .tools/onnx2tf/bin/python benchmarks/keras_train_step.py [--stages 3] [--batch 32] [--frames 380]
        [--steps 5] [--threads 2]

Runs in the converter environment (TensorFlow 2.19 with Keras 2, `tf_keras`), imports nothing from
aslfr, and builds the network with `keras_reference.build` (SEED-SPEC 6 the seed's Keras way).
A step is forward, CTC loss (blank 59, every frame counted, as the seed), backward and an Adam
update (TensorFlow Addons' RectifiedAdam + Lookahead, the seed's, no longer install on this
TensorFlow; their update is elementwise work of the size of the weights), compiled with
`tf.function` (graph mode, no XLA). The batch is padded as the project's benchmark pads it. It
also measures TensorFlow's float32 matmul at the network's shape. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stages", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--frames", type=int, default=380)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(a.threads)
    tf.config.threading.set_inter_op_parallelism_threads(a.threads)
    import tf_keras

    from keras_reference import build

    tf_keras.utils.set_random_seed(0)
    model = build(a.stages)
    rng = np.random.default_rng(0)
    lengths = rng.integers(a.frames // 3, a.frames + 1, a.batch)
    x = rng.standard_normal((a.batch, a.frames, 600)).astype(np.float32)
    x[np.arange(a.frames)[None] >= lengths[:, None]] = 0
    labels = rng.integers(0, 59, (a.batch, 20)).astype(np.int32)
    x, labels = tf.constant(x), tf.constant(labels)
    opt = tf_keras.optimizers.Adam(1e-3)

    @tf.function(jit_compile=False)
    def step(x, labels):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(tf.nn.ctc_loss(
                labels, logits, label_length=tf.fill([a.batch], 20), logit_length=tf.fill([a.batch], a.frames),
                logits_time_major=False, blank_index=59))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    times = []
    for i in range(a.steps + 2):  # two warm-up steps: tracing, then the first real run
        t = time.perf_counter()
        float(step(x, labels))
        if i >= 2:
            times.append(time.perf_counter() - t)
    m, k, n = a.batch * a.frames, 384, 768
    p, q = tf.random.normal((m, k)), tf.random.normal((k, n))
    mm = tf.function(lambda: tf.matmul(p, q))
    mm()
    mm_times = []
    for _ in range(10):
        t = time.perf_counter()
        mm().numpy()
        mm_times.append(time.perf_counter() - t)
    print(json.dumps({"step_s": statistics.median(times), "steps": [round(s, 3) for s in times],
                      "samples_per_s": a.batch / statistics.median(times),
                      "matmul_gflops": 2 * m * k * n / statistics.median(mm_times) / 1e9,
                      "tensorflow": tf.__version__, "threads": a.threads, "allocator": allocator()}))


def allocator() -> str:
    """tcmalloc or jemalloc when preloaded, else the C library's malloc."""
    maps = open("/proc/self/maps").read()
    return next((name for name in ("tcmalloc", "jemalloc") if f"lib{name}" in maps), "glibc malloc")


if __name__ == "__main__":
    main()
