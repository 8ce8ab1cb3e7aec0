"""TensorFlow's side: a loaded SavedModel version (``model_runtime``), the model repository on disk
(``repository``), declared preprocessing, devices and giving memory back. Modules that need TensorFlow import it
themselves."""
