"""The custom resources of aidc as pydantic models: the single source of truth of the API.

The CRDs in ``crds/`` are generated from these models, and the operator parses every
object it receives through them.
"""

from aidc.api.common import Condition
from aidc.api.errors import describe_validation_error
from aidc.api.inferenceservice import InferenceService, InferenceServiceSpec, InferenceServiceStatus
from aidc.api.trainingjob import TrainingJob, TrainingJobSpec, TrainingJobStatus
from aidc.contract import API_VERSION, GROUP, VERSION

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
