"""The core data types that cross every layer: requests, completions, model shapes, capabilities,
usage, problems, prompt formats, samples and results.

They live here, at the bottom of the package (nothing here imports ttscale but its errors), so
the store, the verifiers, replay and the backends can share them without importing each other or
a strategy module. ``engine`` holds what crosses the backend protocol, ``run`` what a run stores.
"""

from ttscale.types.engine import (
    DEFAULT_DELIMITER,
    KV_CACHE_TYPES,
    Cancelled,
    Capabilities,
    ChatMessage,
    Completion,
    FinishReason,
    Generation,
    GenerationRequest,
    ModelInfo,
    OnFinish,
    OnSample,
    Role,
    ShouldStop,
    Usage,
    capabilities_of,
    kv_element_bytes,
    precision_bytes,
    precision_label,
    split_precision,
)
from ttscale.types.run import (
    Problem,
    PromptFormat,
    PromptStyle,
    Result,
    Sample,
    Sampling,
    Shot,
    check_options,
    dataclass_knobs,
    options_error,
)

__all__ = [
    "DEFAULT_DELIMITER", "KV_CACHE_TYPES", "Cancelled", "Capabilities", "ChatMessage", "Completion", "FinishReason",
    "Generation", "GenerationRequest", "ModelInfo", "OnFinish", "OnSample", "Problem", "PromptFormat", "PromptStyle",
    "Result", "Role", "Sample", "Sampling", "Shot", "ShouldStop", "Usage", "capabilities_of", "dataclass_knobs",
    "kv_element_bytes", "check_options", "options_error", "precision_bytes", "precision_label", "split_precision",
]
