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
    from parallel_tasks.credentials import (
        ParallelCredentials,
        aresolve_credentials,
        resolve_credentials,
        resolve_webhook_secrets,
    )
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
        InvalidRunInputError,
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
        AuditSummary,
        AutoSchema,
        Error,
        ErrorResponse,
        JsonSchema,
        McpServer,
        RunInputRecord,
        SourcePolicy,
        TaskAdvancedSettings,
        TaskDataSources,
        TaskRunInput,
        TaskSpec,
        TextSchema,
        ValidationReport,
        Violation,
        Webhook,
        normalize_schema,
    )
    from parallel_tasks.retry import RetryPolicy
    from parallel_tasks.tasks import (
        arecord_task_run_input_lineage,
        aretrieve_task_run_input,
        audit_run_inputs_batch,
        materialize_run_input_assets,
        record_task_run_input_failure,
        record_task_run_input_lineage,
        retrieve_task_run_input,
        retry_if_retryable,
        run_input_cache_key,
        validate_task_run_input,
    )
    from parallel_tasks.webhooks import WebhookVerifier, create_webhook_app

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
    "resolve_webhook_secrets": "parallel_tasks.credentials",
    "WebhookVerifier": "parallel_tasks.webhooks",
    "create_webhook_app": "parallel_tasks.webhooks",
    "APIConnectionError": "parallel_tasks.errors",
    "APIError": "parallel_tasks.errors",
    "APIStatusError": "parallel_tasks.errors",
    "APITimeoutError": "parallel_tasks.errors",
    "AuthenticationError": "parallel_tasks.errors",
    "BadRequestError": "parallel_tasks.errors",
    "ConflictError": "parallel_tasks.errors",
    "InternalServerError": "parallel_tasks.errors",
    "InvalidRunIdError": "parallel_tasks.errors",
    "InvalidRunInputError": "parallel_tasks.errors",
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
    "AuditSummary": "parallel_tasks.models",
    "RunInputRecord": "parallel_tasks.models",
    "ValidationReport": "parallel_tasks.models",
    "Violation": "parallel_tasks.models",
    "aretrieve_task_run_input": "parallel_tasks.tasks",
    "arecord_task_run_input_lineage": "parallel_tasks.tasks",
    "audit_run_inputs_batch": "parallel_tasks.tasks",
    "materialize_run_input_assets": "parallel_tasks.tasks",
    "record_task_run_input_failure": "parallel_tasks.tasks",
    "record_task_run_input_lineage": "parallel_tasks.tasks",
    "retrieve_task_run_input": "parallel_tasks.tasks",
    "retry_if_retryable": "parallel_tasks.tasks",
    "run_input_cache_key": "parallel_tasks.tasks",
    "validate_task_run_input": "parallel_tasks.tasks",
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
    "AuditSummary",
    "AuthenticationError",
    "AutoSchema",
    "BadRequestError",
    "ConflictError",
    "Error",
    "ErrorResponse",
    "FetchResult",
    "InternalServerError",
    "InvalidRunIdError",
    "InvalidRunInputError",
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
    "RunInputRecord",
    "SourcePolicy",
    "TaskAdvancedSettings",
    "TaskDataSources",
    "TaskRunInput",
    "TaskSpec",
    "TextSchema",
    "UnprocessableEntityError",
    "ValidationReport",
    "Violation",
    "Webhook",
    "WebhookVerifier",
    "__version__",
    "arecord_task_run_input_lineage",
    "aresolve_credentials",
    "aretrieve_task_run_input",
    "audit_run_inputs_batch",
    "create_webhook_app",
    "materialize_run_input_assets",
    "normalize_schema",
    "record_task_run_input_failure",
    "record_task_run_input_lineage",
    "resolve_credentials",
    "resolve_webhook_secrets",
    "retrieve_task_run_input",
    "retry_if_retryable",
    "run_input_cache_key",
    "validate_task_run_input",
]
