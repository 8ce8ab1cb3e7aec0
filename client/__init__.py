"""tfclassify client library: call a tfclassify server without TensorFlow.

>>> from tfclassify.client import ClassifierClient
>>> with ClassifierClient("localhost:8500") as client:
...     print(client.classify(image, model="fashion_mnist")[0].label)
"""

from tfclassify.client.client import ClassifierClient, ClassifyFuture, model_spec
from tfclassify.client.errors import TfclassifyError
from tfclassify.client.results import ClassifyResult, ModelInfo, Prediction, RankedClass, VersionStatus

__all__ = [
    "ClassifierClient",
    "ClassifyFuture",
    "ClassifyResult",
    "ModelInfo",
    "Prediction",
    "RankedClass",
    "TfclassifyError",
    "VersionStatus",
    "model_spec",
]
