"""The HTTP/REST port: TensorFlow Serving's REST API, the Open Inference Protocol's HTTP binding and our own
``/classify`` for people and scripts, served by aiohttp on the event loop that runs gRPC.

Each route turns its HTTP request into the protobuf message of the matching gRPC method and calls that method's
servicer as gRPC would (``calls.invoke``), so both transports share one queue per model version, the version
labels, deadlines, token checks, admission control, statistics, metrics and access log.
"""
