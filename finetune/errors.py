"""Errors of fine-tuning: datasets, specs, jobs, adapters, exports."""
from common.errors import DocentError


class FinetuneError(DocentError):
    """Base class of fine-tuning's errors."""
