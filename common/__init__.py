"""What the client, the server and the trainer share, so that none imports another: tensor conversion, image files
to model input (``image_files``, ``inputs``), the dataset readers (``datasets``), the model repository's layout
(``repository``), reading the model config file, the package version, and what every command shares (``commands``,
``tf_logs``). Only protobuf, numpy and Pillow: the client installs it without TensorFlow, and it imports nothing of
the client, the server or the trainer (tests/unit/test_import_directions.py guards it)."""
