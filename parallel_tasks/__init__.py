"""Prefect 3 tasks and flows for the Parallel Task API: typed run inputs, validation and lineage records.

The public API is what this module exports. Example:

    >>> from parallel_tasks import ParallelCredentials, TaskRunInput
    >>> TaskRunInput.model_validate({"processor": "base", "input": "What is the GDP of France?"}).processor
    'base'
"""

from typing import TYPE_CHECKING, Any

from parallel_tasks._version import __version__

if TYPE_CHECKING:
    from parallel_tasks.client import DEFAULT_BASE_URL, AsyncParallelClient, FetchResult, ParallelClient
    from parallel_tasks.credentials import ParallelCredentials, aresolve_credentials, resolve_credentials
    from parallel_tasks.errors import (
        APIConnectionError,
        APIError,
        APIStatusError,
        APITimeoutError,
        AuthenticationError,
        BadRequestError,
        ConflictError,
        InternalServerError,
        InvalidRunIdError,
        MissingCredentialsError,
        NotFoundError,
        ParallelError,
        PaymentRequiredError,
        PermissionDeniedError,
        RateLimitError,
        RequestTimeoutError,
        ResponseTooLargeError,
        ResponseValidationError,
        UnprocessableEntityError,
    )
    from parallel_tasks.models import (
        AutoSchema,
        Error,
        ErrorResponse,
        JsonSchema,
        McpServer,
        SourcePolicy,
        TaskAdvancedSettings,
        TaskDataSources,
        TaskRunInput,
        TaskSpec,
        TextSchema,
        Webhook,
        normalize_schema,
    )
    from parallel_tasks.retry import RetryPolicy

# Exports load on first use: importing the package (say, for the emulator or the HTTP client)
# does not pay for importing Prefect until a Prefect-backed name is asked for.
_EXPORTS = {
    "DEFAULT_BASE_URL": "parallel_tasks.client",
    "AsyncParallelClient": "parallel_tasks.client",
    "FetchResult": "parallel_tasks.client",
    "ParallelClient": "parallel_tasks.client",
    "ParallelCredentials": "parallel_tasks.credentials",
    "aresolve_credentials": "parallel_tasks.credentials",
    "resolve_credentials": "parallel_tasks.credentials",
    "APIConnectionError": "parallel_tasks.errors",
    "APIError": "parallel_tasks.errors",
    "APIStatusError": "parallel_tasks.errors",
    "APITimeoutError": "parallel_tasks.errors",
    "AuthenticationError": "parallel_tasks.errors",
    "BadRequestError": "parallel_tasks.errors",
    "ConflictError": "parallel_tasks.errors",
    "InternalServerError": "parallel_tasks.errors",
    "InvalidRunIdError": "parallel_tasks.errors",
    "MissingCredentialsError": "parallel_tasks.errors",
    "NotFoundError": "parallel_tasks.errors",
    "ParallelError": "parallel_tasks.errors",
    "PaymentRequiredError": "parallel_tasks.errors",
    "PermissionDeniedError": "parallel_tasks.errors",
    "RateLimitError": "parallel_tasks.errors",
    "RequestTimeoutError": "parallel_tasks.errors",
    "ResponseTooLargeError": "parallel_tasks.errors",
    "ResponseValidationError": "parallel_tasks.errors",
    "UnprocessableEntityError": "parallel_tasks.errors",
    "AutoSchema": "parallel_tasks.models",
    "Error": "parallel_tasks.models",
    "ErrorResponse": "parallel_tasks.models",
    "JsonSchema": "parallel_tasks.models",
    "McpServer": "parallel_tasks.models",
    "SourcePolicy": "parallel_tasks.models",
    "TaskAdvancedSettings": "parallel_tasks.models",
    "TaskDataSources": "parallel_tasks.models",
    "TaskRunInput": "parallel_tasks.models",
    "TaskSpec": "parallel_tasks.models",
    "TextSchema": "parallel_tasks.models",
    "Webhook": "parallel_tasks.models",
    "normalize_schema": "parallel_tasks.models",
    "RetryPolicy": "parallel_tasks.retry",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'parallel_tasks' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "DEFAULT_BASE_URL",
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AsyncParallelClient",
    "AuthenticationError",
    "AutoSchema",
    "BadRequestError",
    "ConflictError",
    "Error",
    "ErrorResponse",
    "FetchResult",
    "InternalServerError",
    "InvalidRunIdError",
    "JsonSchema",
    "McpServer",
    "MissingCredentialsError",
    "NotFoundError",
    "ParallelClient",
    "ParallelCredentials",
    "ParallelError",
    "PaymentRequiredError",
    "PermissionDeniedError",
    "RateLimitError",
    "RequestTimeoutError",
    "ResponseTooLargeError",
    "ResponseValidationError",
    "RetryPolicy",
    "SourcePolicy",
    "TaskAdvancedSettings",
    "TaskDataSources",
    "TaskRunInput",
    "TaskSpec",
    "TextSchema",
    "UnprocessableEntityError",
    "Webhook",
    "__version__",
    "aresolve_credentials",
    "normalize_schema",
    "resolve_credentials",
]
