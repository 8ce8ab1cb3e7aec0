"""The scoring pipeline's inputs: the plan of a run (``plan``) and the pool of decoding workers (``workers``).
What the trainer shares with it (sources, labels, decoding) lives in ``tfclassify.common.inputs``."""
