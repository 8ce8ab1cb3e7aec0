"""The Triton peer for ``make bench-peers``: one SavedModel served by Triton
Inference Server through PyTriton, with Triton's dynamic batcher.

Usage (in the peer's environment, .venv-triton/, from bench/get_pytriton.sh):
  python -P bench/pytriton_serve.py VERSION_DIR NAME GRPC_PORT HTTP_PORT METRICS_PORT
  [--max-batch-size 1024] [--max-queue-delay-us 100]

Loads the version with ``tf.saved_model.load`` and binds its serving
signature as the infer function of model NAME: every input and output of the
signature, without the batch dimension, as Triton's model configuration wants
it. Triton's C++ front end takes the requests and forms the batches; each batch
goes once to this Python process, where the signature runs on it. Runs until
SIGTERM or SIGINT. Needs no file of this project, so it runs under Python 3.12;
``-P`` keeps bench/ off ``sys.path`` (bench/http.py would shadow the standard
library's ``http``).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import tensorflow as tf
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("version_dir")
    parser.add_argument("name")
    parser.add_argument("grpc_port", type=int)
    parser.add_argument("http_port", type=int)
    parser.add_argument("metrics_port", type=int)
    parser.add_argument("--max-batch-size", type=int, default=1024)
    parser.add_argument("--max-queue-delay-us", type=int, default=100)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    # SIGTERM unwinds through the ``with`` below, which stops tritonserver and the backend stub.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    signature = tf.saved_model.load(args.version_dir).signatures["serving_default"]
    _, input_specs = signature.structured_input_signature
    output_specs = signature.structured_outputs

    @batch
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        results = signature(**{k: tf.constant(v) for k, v in inputs.items()})
        # A per-image scalar (``classes``: [N]) goes out as [N, 1], the shape its configuration declares.
        return {k: v.numpy().reshape(len(v), -1) if v.shape.rank == 1 else v.numpy() for k, v in results.items()}

    def tensors(specs: dict) -> list[Tensor]:
        return [Tensor(name=k, dtype=s.dtype.as_numpy_dtype, shape=tuple(d or -1 for d in s.shape[1:]) or (1,))
                for k, s in specs.items()]

    config = TritonConfig(grpc_port=args.grpc_port, http_port=args.http_port, metrics_port=args.metrics_port,
                          exit_on_error=True, log_verbose=0)
    with Triton(config=config) as triton:
        triton.bind(
            model_name=args.name,
            infer_func=infer,
            inputs=tensors(input_specs),
            outputs=tensors(output_specs),
            config=ModelConfig(max_batch_size=args.max_batch_size,
                               batcher=DynamicBatcher(max_queue_delay_microseconds=args.max_queue_delay_us)),
            strict=False,
        )
        triton.serve()


if __name__ == "__main__":
    main()
