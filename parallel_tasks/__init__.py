"""Prefect 3 tasks and flows for the Parallel Task API: typed run inputs, validation and lineage records.

The public API is what this module exports (``__all__``). Example:

    >>> from parallel_tasks import ParallelCredentials, TaskRunInput
    >>> TaskRunInput.model_validate({"processor": "base", "input": "What is the GDP of France?"}).processor
    'base'

The flows are in :mod:`parallel_tasks.flows` (``from parallel_tasks.flows import audit_run_inputs``). Their
OpenLineage events (the ``openlineage`` extra) are in :mod:`parallel_tasks.openlineage`: ``with_openlineage``
for a flow function, ``add_openlineage_inputs`` inside it, and the pure event builders.
"""

from typing import TYPE_CHECKING, Any

from parallel_tasks._version import __version__ as __version__

# The public names, by the module that holds them: the one table. Exports load on first use, so importing
# the package (say, for the emulator or the HTTP client) does not pay for importing Prefect until a
# Prefect-backed name is asked for.
_EXPORTS_BY_MODULE: dict[str, tuple[str, ...]] = {
    "parallel_tasks.client": (
        "DEFAULT_BASE_URL",
        "AsyncParallelClient",
        "ParallelClient",
    ),
    "parallel_tasks.credentials": (
        "ParallelCredentials",
        "aresolve_credentials",
        "resolve_credentials",
        "resolve_webhook_secrets",
    ),
    "parallel_tasks.errors": (
        "APIConnectionError",
        "APIError",
        "APIStatusError",
        "APITimeoutError",
        "AuthenticationError",
        "BadRequestError",
        "ConflictError",
        "InternalServerError",
        "InvalidRunIdError",
        "InvalidRunInputError",
        "MissingCredentialsError",
        "NotFoundError",
        "ParallelError",
        "PaymentRequiredError",
        "PermissionDeniedError",
        "RateLimitError",
        "RequestTimeoutError",
        "ResponseTooLargeError",
        "ResponseValidationError",
        "UnprocessableEntityError",
    ),
    "parallel_tasks.ledger": ("AuditLedger",),
    "parallel_tasks.manifests": (
        "ManifestKey",
        "write_audit_manifest",
    ),
    "parallel_tasks.models": (
        "AuditSummary",
        "AutoSchema",
        "ErrorDetail",
        "ErrorResponse",
        "FetchResult",
        "JsonSchema",
        "McpServer",
        "RunInputRecord",
        "SourcePolicy",
        "TaskAdvancedSettings",
        "TaskDataSources",
        "TaskRunInput",
        "TaskSpec",
        "TextSchema",
        "ValidationReport",
        "Violation",
        "Webhook",
        "normalize_schema",
    ),
    "parallel_tasks.retry": ("RetryPolicy",),
    "parallel_tasks.settings": (
        "ParallelSettings",
        "get_settings",
    ),
    "parallel_tasks.tasks": (
        "arecord_task_run_input_lineage",
        "aretrieve_task_run_input",
        "audit_run_inputs_batch",
        "record_task_run_input_failure",
        "record_task_run_input_lineage",
        "retrieve_task_run_input",
        "retry_if_retryable",
        "run_input_cache_key",
        "validate_task_run_input",
    ),
    "parallel_tasks.validation": ("check_task_run_input",),
    "parallel_tasks.webhooks": (
        "WebhookVerifier",
        "create_webhook_app",
    ),
    "parallel_tasks.verify": (
        "Finding",
        "FsspecStore",
        "LocalStore",
        "Report",
        "prove",
        "verify_store",
    ),
}
_EXPORTS = {name: module for module, names in _EXPORTS_BY_MODULE.items() for name in names}

__all__ = sorted([*_EXPORTS, "__version__"])

# For type checkers and IDEs (``X as X`` marks a re-export); a test checks that these match the table.
# isort: off
if TYPE_CHECKING:
    from parallel_tasks.client import (
        DEFAULT_BASE_URL as DEFAULT_BASE_URL,
        AsyncParallelClient as AsyncParallelClient,
        ParallelClient as ParallelClient,
    )
    from parallel_tasks.credentials import (
        ParallelCredentials as ParallelCredentials,
        aresolve_credentials as aresolve_credentials,
        resolve_credentials as resolve_credentials,
        resolve_webhook_secrets as resolve_webhook_secrets,
    )
    from parallel_tasks.errors import (
        APIConnectionError as APIConnectionError,
        APIError as APIError,
        APIStatusError as APIStatusError,
        APITimeoutError as APITimeoutError,
        AuthenticationError as AuthenticationError,
        BadRequestError as BadRequestError,
        ConflictError as ConflictError,
        InternalServerError as InternalServerError,
        InvalidRunIdError as InvalidRunIdError,
        InvalidRunInputError as InvalidRunInputError,
        MissingCredentialsError as MissingCredentialsError,
        NotFoundError as NotFoundError,
        ParallelError as ParallelError,
        PaymentRequiredError as PaymentRequiredError,
        PermissionDeniedError as PermissionDeniedError,
        RateLimitError as RateLimitError,
        RequestTimeoutError as RequestTimeoutError,
        ResponseTooLargeError as ResponseTooLargeError,
        ResponseValidationError as ResponseValidationError,
        UnprocessableEntityError as UnprocessableEntityError,
    )
    from parallel_tasks.ledger import (
        AuditLedger as AuditLedger,
    )
    from parallel_tasks.manifests import (
        ManifestKey as ManifestKey,
        write_audit_manifest as write_audit_manifest,
    )
    from parallel_tasks.models import (
        AuditSummary as AuditSummary,
        AutoSchema as AutoSchema,
        ErrorDetail as ErrorDetail,
        ErrorResponse as ErrorResponse,
        FetchResult as FetchResult,
        JsonSchema as JsonSchema,
        McpServer as McpServer,
        RunInputRecord as RunInputRecord,
        SourcePolicy as SourcePolicy,
        TaskAdvancedSettings as TaskAdvancedSettings,
        TaskDataSources as TaskDataSources,
        TaskRunInput as TaskRunInput,
        TaskSpec as TaskSpec,
        TextSchema as TextSchema,
        ValidationReport as ValidationReport,
        Violation as Violation,
        Webhook as Webhook,
        normalize_schema as normalize_schema,
    )
    from parallel_tasks.retry import (
        RetryPolicy as RetryPolicy,
    )
    from parallel_tasks.settings import (
        ParallelSettings as ParallelSettings,
        get_settings as get_settings,
    )
    from parallel_tasks.tasks import (
        arecord_task_run_input_lineage as arecord_task_run_input_lineage,
        aretrieve_task_run_input as aretrieve_task_run_input,
        audit_run_inputs_batch as audit_run_inputs_batch,
        record_task_run_input_failure as record_task_run_input_failure,
        record_task_run_input_lineage as record_task_run_input_lineage,
        retrieve_task_run_input as retrieve_task_run_input,
        retry_if_retryable as retry_if_retryable,
        run_input_cache_key as run_input_cache_key,
        validate_task_run_input as validate_task_run_input,
    )
    from parallel_tasks.validation import (
        check_task_run_input as check_task_run_input,
    )
    from parallel_tasks.webhooks import (
        WebhookVerifier as WebhookVerifier,
        create_webhook_app as create_webhook_app,
    )
    from parallel_tasks.verify import (
        Finding as Finding,
        FsspecStore as FsspecStore,
        LocalStore as LocalStore,
        Report as Report,
        prove as prove,
        verify_store as verify_store,
    )
# isort: on


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
