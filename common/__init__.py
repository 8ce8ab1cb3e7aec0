"""What the client, the server and the trainer share: tensor conversion, the package version and reading the
model config file. Only protobuf and numpy: the client installs it without TensorFlow."""
