"""The tfclassify gRPC server. Submodules that need TensorFlow import it themselves."""
