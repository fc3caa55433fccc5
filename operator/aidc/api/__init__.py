"""The custom resources of aidc as pydantic models: the single source of truth of the API.

The CRDs in ``crds/`` are generated from these models, and the operator parses every
object it receives through them.
"""

from aidc.api.common import API_VERSION, GROUP, VERSION, Condition
from aidc.api.errors import describe_validation_error
from aidc.api.inferenceservice import InferenceService, InferenceServiceSpec, InferenceServiceStatus
from aidc.api.trainingjob import TrainingJob, TrainingJobSpec, TrainingJobStatus

__all__ = [
    "API_VERSION",
    "GROUP",
    "VERSION",
    "Condition",
    "InferenceService",
    "InferenceServiceSpec",
    "InferenceServiceStatus",
    "TrainingJob",
    "TrainingJobSpec",
    "TrainingJobStatus",
    "describe_validation_error",
]
