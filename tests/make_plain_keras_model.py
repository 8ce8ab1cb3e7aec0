"""Build a classifier the way a user outside tfclassify would: plain Keras,
float inputs [N, 784] already scaled to [0, 1], logits out, ``Model.export()``,
no label file. Trains on the first 5,000 MNIST test images.

Usage: python make_plain_keras_model.py MNIST_DIR OUT_DIR
"""

import sys

import keras
import numpy as np

from tfclassify.common.datasets import load_dataset

data = load_dataset("mnist", "test", sys.argv[1], download_missing=False)
x = data.images[:5000].reshape(-1, 784).astype("float32") / 255
y = data.labels[:5000]
keras.utils.set_random_seed(0)
model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(128, activation="relu"), keras.layers.Dense(10)])
model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
model.fit(x, y, epochs=5, batch_size=64, verbose=0)
model.export(sys.argv[2], verbose=False)
print("exported plain Keras model to", sys.argv[2], np.round(model.evaluate(x, y, verbose=0), 4))
