"""A TrainingJob parsed once per version, its spec once per generation.

Most passes see a new version that differs only in status (each status write makes one), and
the spec with its CEL checks was most of the parsing. The API server bumps
``metadata.generation`` on every change of spec, so (uid, generation) names a spec; a pass that
sees the very version and status object of the last one reuses the whole job.
"""

from __future__ import annotations

from typing import Any

from aidc.api import TrainingJob
from aidc.management.workers import Memory


def parse_spec_once(seen: dict[str, Any], memory: Memory) -> TrainingJob:
    """The job as a model, its spec parsed again only when (uid, generation) changed."""
    metadata = seen.get("metadata") or {}
    spec_key = (metadata.get("uid"), metadata.get("generation"))
    if memory.spec is not None and spec_key[1] is not None and memory.spec[0] == spec_key:
        return TrainingJob.model_validate({**seen, "spec": memory.spec[1]})
    job = TrainingJob.model_validate(seen)
    memory.spec = (spec_key, job.spec)
    return job


def parse_job(seen: dict[str, Any], memory: Memory) -> TrainingJob:
    """``seen`` (the body, its status perhaps replaced by one not written yet) as a model.

    Raises pydantic's ValidationError for a spec the operator cannot use.
    """
    version, status = str(seen["metadata"].get("resourceVersion")), seen.get("status")
    if memory.parsed is not None and memory.parsed[0] == version and memory.parsed[1] is status:
        job: TrainingJob = memory.parsed[2]  # nothing changed since the last pass
        return job
    job = parse_spec_once(seen, memory)
    memory.parsed = (version, status, job)
    return job
