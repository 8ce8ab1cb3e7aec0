"""Trains Keras classifiers on the MNIST family and exports versioned SavedModels."""
