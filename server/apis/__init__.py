"""The protocols the server answers on its gRPC port, each a servicer over the one data plane: our
``tfclassify.v1.Classifier`` (``classifier``), TensorFlow Serving's API (``tfserving``, with ``tf_examples``), the
Open Inference Protocol (``oip``, with ``oip_tensors``); and what they share: the meter that counts and fails every
RPC (``meter``), the error-to-status table (``statuses``), admission and the access log, and the registration of
the services (``services``)."""
