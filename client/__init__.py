"""tfclassify client library: call a tfclassify server without TensorFlow.

>>> from tfclassify.client import ClassifierClient
>>> with ClassifierClient("localhost:8500") as client:
...     print(client.classify(images, model="fashion_mnist")[0].label)

``tfclassify.client.aio`` has the same client for asyncio; ``tfclassify.client.scoring``
scores folders, archives and datasets (``score_files``).
"""

from tfclassify.client.client import ClassifierClient, ClassifyFuture
from tfclassify.client.errors import TfclassifyError
from tfclassify.client.requests import model_spec
from tfclassify.client.results import (
    ClassifyResult,
    FeedbackResult,
    ModelInfo,
    Prediction,
    RankedClass,
    RepositoryStatus,
    VersionStatus,
)

__all__ = [
    "ClassifierClient",
    "ClassifyFuture",
    "ClassifyResult",
    "FeedbackResult",
    "ModelInfo",
    "Prediction",
    "RankedClass",
    "RepositoryStatus",
    "TfclassifyError",
    "VersionStatus",
    "model_spec",
]
