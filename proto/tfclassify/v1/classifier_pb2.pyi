from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DataType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DATA_TYPE_UNSPECIFIED: _ClassVar[DataType]
    UINT8: _ClassVar[DataType]
    FLOAT32: _ClassVar[DataType]
    STRING: _ClassVar[DataType]
DATA_TYPE_UNSPECIFIED: DataType
UINT8: DataType
FLOAT32: DataType
STRING: DataType

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "content")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    dtype: DataType
    shape: _containers.RepeatedScalarFieldContainer[int]
    content: bytes
    def __init__(self, dtype: _Optional[_Union[DataType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., content: _Optional[bytes] = ...) -> None: ...

class EncodedImages(_message.Message):
    __slots__ = ("images",)
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, images: _Optional[_Iterable[bytes]] = ...) -> None: ...

class ModelSpec(_message.Message):
    __slots__ = ("name", "version", "version_label")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    VERSION_LABEL_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    version_label: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., version_label: _Optional[str] = ...) -> None: ...

class ClassifyRequest(_message.Message):
    __slots__ = ("model_spec", "tensor", "encoded", "top_k", "return_probabilities", "request_id", "omit_labels", "true_classes", "keep_for_feedback")
    MODEL_SPEC_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    ENCODED_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    RETURN_PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OMIT_LABELS_FIELD_NUMBER: _ClassVar[int]
    TRUE_CLASSES_FIELD_NUMBER: _ClassVar[int]
    KEEP_FOR_FEEDBACK_FIELD_NUMBER: _ClassVar[int]
    model_spec: ModelSpec
    tensor: Tensor
    encoded: EncodedImages
    top_k: int
    return_probabilities: bool
    request_id: str
    omit_labels: bool
    true_classes: _containers.RepeatedScalarFieldContainer[int]
    keep_for_feedback: bool
    def __init__(self, model_spec: _Optional[_Union[ModelSpec, _Mapping]] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ..., encoded: _Optional[_Union[EncodedImages, _Mapping]] = ..., top_k: _Optional[int] = ..., return_probabilities: bool = ..., request_id: _Optional[str] = ..., omit_labels: bool = ..., true_classes: _Optional[_Iterable[int]] = ..., keep_for_feedback: bool = ...) -> None: ...

class ClassifyResponse(_message.Message):
    __slots__ = ("model_spec", "classes", "scores", "labels", "top_k", "top_k_classes", "top_k_scores", "top_k_labels", "probabilities", "request_id")
    MODEL_SPEC_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    TOP_K_CLASSES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_SCORES_FIELD_NUMBER: _ClassVar[int]
    TOP_K_LABELS_FIELD_NUMBER: _ClassVar[int]
    PROBABILITIES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    model_spec: ModelSpec
    classes: _containers.RepeatedScalarFieldContainer[int]
    scores: _containers.RepeatedScalarFieldContainer[float]
    labels: _containers.RepeatedScalarFieldContainer[str]
    top_k: int
    top_k_classes: _containers.RepeatedScalarFieldContainer[int]
    top_k_scores: _containers.RepeatedScalarFieldContainer[float]
    top_k_labels: _containers.RepeatedScalarFieldContainer[str]
    probabilities: Tensor
    request_id: str
    def __init__(self, model_spec: _Optional[_Union[ModelSpec, _Mapping]] = ..., classes: _Optional[_Iterable[int]] = ..., scores: _Optional[_Iterable[float]] = ..., labels: _Optional[_Iterable[str]] = ..., top_k: _Optional[int] = ..., top_k_classes: _Optional[_Iterable[int]] = ..., top_k_scores: _Optional[_Iterable[float]] = ..., top_k_labels: _Optional[_Iterable[str]] = ..., probabilities: _Optional[_Union[Tensor, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class GetModelMetadataRequest(_message.Message):
    __slots__ = ("model_spec",)
    MODEL_SPEC_FIELD_NUMBER: _ClassVar[int]
    model_spec: ModelSpec
    def __init__(self, model_spec: _Optional[_Union[ModelSpec, _Mapping]] = ...) -> None: ...

class ModelMetadata(_message.Message):
    __slots__ = ("model_spec", "versions", "input_shape", "input_dtype", "input_scale", "labels", "output_kind", "signature_name", "training_metadata_json", "device", "runtime", "channels", "preprocessing")
    MODEL_SPEC_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    INPUT_DTYPE_FIELD_NUMBER: _ClassVar[int]
    INPUT_SCALE_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_KIND_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_NAME_FIELD_NUMBER: _ClassVar[int]
    TRAINING_METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    PREPROCESSING_FIELD_NUMBER: _ClassVar[int]
    model_spec: ModelSpec
    versions: _containers.RepeatedScalarFieldContainer[int]
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    input_dtype: DataType
    input_scale: float
    labels: _containers.RepeatedScalarFieldContainer[str]
    output_kind: str
    signature_name: str
    training_metadata_json: str
    device: str
    runtime: str
    channels: int
    preprocessing: Preprocessing
    def __init__(self, model_spec: _Optional[_Union[ModelSpec, _Mapping]] = ..., versions: _Optional[_Iterable[int]] = ..., input_shape: _Optional[_Iterable[int]] = ..., input_dtype: _Optional[_Union[DataType, str]] = ..., input_scale: _Optional[float] = ..., labels: _Optional[_Iterable[str]] = ..., output_kind: _Optional[str] = ..., signature_name: _Optional[str] = ..., training_metadata_json: _Optional[str] = ..., device: _Optional[str] = ..., runtime: _Optional[str] = ..., channels: _Optional[int] = ..., preprocessing: _Optional[_Union[Preprocessing, _Mapping]] = ...) -> None: ...

class Preprocessing(_message.Message):
    __slots__ = ("scale", "offset", "mean", "std", "channel_order", "resize", "crop_fraction", "interpolation")
    SCALE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_ORDER_FIELD_NUMBER: _ClassVar[int]
    RESIZE_FIELD_NUMBER: _ClassVar[int]
    CROP_FRACTION_FIELD_NUMBER: _ClassVar[int]
    INTERPOLATION_FIELD_NUMBER: _ClassVar[int]
    scale: float
    offset: float
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    channel_order: str
    resize: str
    crop_fraction: float
    interpolation: str
    def __init__(self, scale: _Optional[float] = ..., offset: _Optional[float] = ..., mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ..., channel_order: _Optional[str] = ..., resize: _Optional[str] = ..., crop_fraction: _Optional[float] = ..., interpolation: _Optional[str] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelMetadata]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelMetadata, _Mapping]]] = ...) -> None: ...

class GetModelStatusRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ModelVersionStatus(_message.Message):
    __slots__ = ("name", "version", "state", "error", "devices", "labels", "load_seconds")
    class State(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATE_UNSPECIFIED: _ClassVar[ModelVersionStatus.State]
        LOADING: _ClassVar[ModelVersionStatus.State]
        AVAILABLE: _ClassVar[ModelVersionStatus.State]
        UNLOADING: _ClassVar[ModelVersionStatus.State]
        FAILED: _ClassVar[ModelVersionStatus.State]
    STATE_UNSPECIFIED: ModelVersionStatus.State
    LOADING: ModelVersionStatus.State
    AVAILABLE: ModelVersionStatus.State
    UNLOADING: ModelVersionStatus.State
    FAILED: ModelVersionStatus.State
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    state: ModelVersionStatus.State
    error: str
    devices: _containers.RepeatedScalarFieldContainer[str]
    labels: _containers.RepeatedScalarFieldContainer[str]
    load_seconds: float
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., state: _Optional[_Union[ModelVersionStatus.State, str]] = ..., error: _Optional[str] = ..., devices: _Optional[_Iterable[str]] = ..., labels: _Optional[_Iterable[str]] = ..., load_seconds: _Optional[float] = ...) -> None: ...

class GetModelStatusResponse(_message.Message):
    __slots__ = ("versions", "ignored_folders")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    IGNORED_FOLDERS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[ModelVersionStatus]
    ignored_folders: _containers.RepeatedCompositeFieldContainer[IgnoredFolder]
    def __init__(self, versions: _Optional[_Iterable[_Union[ModelVersionStatus, _Mapping]]] = ..., ignored_folders: _Optional[_Iterable[_Union[IgnoredFolder, _Mapping]]] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("model_name", "request_id", "true_classes")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TRUE_CLASSES_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    request_id: str
    true_classes: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, model_name: _Optional[str] = ..., request_id: _Optional[str] = ..., true_classes: _Optional[_Iterable[int]] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("model_spec", "labelled", "correct")
    MODEL_SPEC_FIELD_NUMBER: _ClassVar[int]
    LABELLED_FIELD_NUMBER: _ClassVar[int]
    CORRECT_FIELD_NUMBER: _ClassVar[int]
    model_spec: ModelSpec
    labelled: int
    correct: int
    def __init__(self, model_spec: _Optional[_Union[ModelSpec, _Mapping]] = ..., labelled: _Optional[int] = ..., correct: _Optional[int] = ...) -> None: ...

class IgnoredFolder(_message.Message):
    __slots__ = ("name", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    reason: str
    def __init__(self, name: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...
