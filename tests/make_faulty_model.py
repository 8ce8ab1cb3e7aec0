"""Build a SavedModel that is slow on purpose and fails on some inputs, for the fault tests.

Every call does a fixed amount of matrix work (about as long as a real model's call on a large batch), and
any batch holding a poisoned image (first three pixels 13, 37, 251: never in the server's load-time probe)
fails at run time (``tf.debugging.Assert``), as a model may fail on inputs it was never meant for. Two
classes, from each image's mean brightness.

Usage: python make_faulty_model.py OUT_DIR
"""

import sys

import tensorflow as tf


class SlowAndPoisonable(tf.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weights = tf.Variable(tf.eye(384) * 0.999)

    @tf.function(input_signature=[tf.TensorSpec([None, 28, 28], tf.uint8, name="images")])
    def serve(self, images):
        corner = tf.cast(images[:, 0, :3], tf.int32)
        poisoned = tf.reduce_all(tf.equal(corner, tf.constant([[13, 37, 251]])), axis=1)
        tf.debugging.Assert(tf.logical_not(tf.reduce_any(poisoned)), ["a poisoned image"])
        work = tf.ones([384, 384])
        for _ in range(24):  # unrolled: a fixed cost per call
            work = tf.matmul(work, self.weights)
        mean = tf.reduce_mean(tf.cast(images, tf.float32), axis=[1, 2]) / 255.0 + 0.0 * tf.reduce_sum(work)
        return {"probabilities": tf.stack([1.0 - mean, mean], axis=1)}


model = SlowAndPoisonable()
tf.saved_model.save(model, sys.argv[1], signatures={"serving_default": model.serve})
