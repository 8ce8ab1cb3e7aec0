"""Image inputs the trainer and the scorer share: folders, archives and array files as items (``sources``), their
true labels (``labels``), zip archives read by offset (``zipindex``) and files decoded to model input
(``decoding``). No TensorFlow, no gRPC."""
