"""The serving core, free of any transport (no gRPC): the data plane that checks images, runs the model and ranks
classes, dynamic batching, the served versions (registry) and their life cycle (manager), the per-request record
(``calls``), live accuracy (feedback), statistics, metrics and the domain errors."""
