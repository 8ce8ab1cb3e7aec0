"""The ports of a tfclassify server as both sides know them: the defaults (gRPC, HTTP/REST, metrics), and the
header by which the metrics port names the gRPC port (so a client pointed at the wrong one can say where to go)."""

DEFAULT_GRPC_PORT = 8500
#: TensorFlow Serving's REST port: our HTTP/REST APIs (TensorFlow Serving's, the Open Inference Protocol's, ours).
DEFAULT_HTTP_PORT = 8501
DEFAULT_METRICS_PORT = 8502
#: Header on every answer of a tfclassify server's metrics port: the server's gRPC port.
GRPC_PORT_HEADER = "Tfclassify-Grpc-Port"
