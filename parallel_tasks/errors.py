"""One exception hierarchy for everything the package raises.

Messages name what failed and for which run; they never hold an API key or a request header.
Every exception pickles (Prefect stores failed task states), and every one is a ``ParallelError``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from parallel_tasks.retry import Failure, is_retryable

if TYPE_CHECKING:
    from parallel_tasks.models import ValidationReport

__all__ = [
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
    "error_class_for_status",
]


class ParallelError(Exception):
    """Base of every error this package raises."""


class InvalidRunIdError(ParallelError, ValueError):
    """A run id was refused before any request was made."""


class MissingCredentialsError(ParallelError):
    """No API key could be found."""


class InvalidRunInputError(ParallelError):
    """A fetched run input breaks validation rules (raised only when a flow is asked to fail on it)."""

    def __init__(self, run_id: str, report: ValidationReport) -> None:
        errors = report.errors
        shown = "; ".join(f"{v.path} ({v.rule}): {v.message}" for v in errors[:5])
        more = f"; and {len(errors) - 5} more" if len(errors) > 5 else ""
        super().__init__(f"Input of run {run_id!r} is invalid: {len(errors)} error(s): {shown}{more}")
        self.run_id = run_id
        self.report = report

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.run_id, self.report))


class APIError(ParallelError):
    """A request to the Parallel API failed. ``run_id`` names the run it was for.

    ``retryable`` says whether the retry policy treats it as worth retrying; :func:`parallel_tasks.retry.is_retryable`
    decides, from the status or, without one, from ``failure`` (what went wrong). ``attempts`` is how many
    requests the client made before giving up (0 when it did not say). ``server_refused_retry``: the client
    stopped because the server said not to retry now (``x-should-retry: false``, or a Retry-After beyond the
    client's cap); the error is then not ``retryable``, so Prefect's task retries do not go against it.
    """

    failure: Failure | None = None
    attempts: int = 0
    server_refused_retry: bool = False

    def __init__(self, message: str, *, run_id: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.run_id = run_id

    @property
    def retryable(self) -> bool:
        """Whether the retry policy treats this error as worth retrying."""
        return is_retryable(failure=self.failure)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild, (type(self), self.__dict__.copy()))


def _rebuild(cls: type[APIError], state: dict[str, Any]) -> APIError:
    """Unpickle without calling ``__init__`` (subclasses take different arguments)."""
    error = cls.__new__(cls)
    Exception.__init__(error, state.get("message", ""))
    error.__dict__.update(state)
    return error


class APIConnectionError(APIError):
    """The request did not get a response: connection refused, reset, or broken mid-body."""

    failure: Failure | None = "connection"


class APITimeoutError(APIConnectionError):
    """The request timed out (connect, read, or the overall deadline)."""

    failure: Failure | None = "timeout"


class ResponseValidationError(APIError):
    """A 2xx response whose body is not JSON or does not match the TaskRunInput schema.

    ``failure`` is ``"unreadable_body"`` for a body that is not JSON at all (most often a broken transfer
    or a proxy's page, so worth retrying), ``"invalid_body"`` for JSON that is not a run input.
    """

    def __init__(
        self,
        message: str,
        *,
        run_id: str | None = None,
        status_code: int | None = None,
        failure: Failure | None = "invalid_body",
    ) -> None:
        super().__init__(message, run_id=run_id)
        self.status_code = status_code
        self.failure = failure


class ResponseTooLargeError(ResponseValidationError):
    """The response body was larger than the configured cap; it was not read in full."""

    def __init__(self, message: str, *, run_id: str | None = None, status_code: int | None = None) -> None:
        super().__init__(message, run_id=run_id, status_code=status_code, failure="too_large")


class APIStatusError(APIError):
    """The API answered with an error status.

    Attributes:
        status_code: The HTTP status.
        ref_id: The API's reference id for the error, when it sent one.
        message: The API's human-readable message (or a description of a non-JSON body).
        detail: The API's optional detail object.
        run_id: The run the request was for.
        retryable: Whether the retry policy treats this status as worth retrying (``retry.is_retryable``), and
            the server did not refuse a retry (``server_refused_retry``).
        response_headers: The response's headers, lower-cased (Retry-After, x-should-retry).
    """

    reason = "Error"

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        run_id: str | None = None,
        ref_id: str | None = None,
        detail: dict[str, Any] | None = None,
        reason: str | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> None:
        self.status_code = status_code
        self.ref_id = ref_id
        self.detail = detail
        self.response_headers = response_headers or {}
        if reason:
            self.reason = reason
        super().__init__(message, run_id=run_id)
        self.message = message

    @property
    def retryable(self) -> bool:
        """Whether the retry policy treats this status as worth retrying, unless the server refused."""
        return is_retryable(self.status_code) and not self.server_refused_retry

    def __str__(self) -> str:
        target = f" for run {self.run_id!r}" if self.run_id is not None else ""
        ref = f" (ref_id {self.ref_id})" if self.ref_id else ""
        return f"{self.status_code} {self.reason}{target}: {self.message}{ref}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"


class BadRequestError(APIStatusError):
    """400: the request was malformed."""

    reason = "Bad Request"


class AuthenticationError(APIStatusError):
    """401: the API key is missing or not valid."""

    reason = "Unauthorized"


class PaymentRequiredError(APIStatusError):
    """402: the account has no credit left."""

    reason = "Payment Required"


class PermissionDeniedError(APIStatusError):
    """403: the key may not read this run."""

    reason = "Forbidden"


class NotFoundError(APIStatusError):
    """404: no run has this id."""

    reason = "Not Found"


class RequestTimeoutError(APIStatusError):
    """408: the server timed out waiting for the request."""

    reason = "Request Timeout"


class ConflictError(APIStatusError):
    """409: the resource is busy; worth retrying."""

    reason = "Conflict"


class UnprocessableEntityError(APIStatusError):
    """422: the request failed validation (for example a malformed run id)."""

    reason = "Unprocessable Entity"


class RateLimitError(APIStatusError):
    """429: too many requests. ``retry_after`` is the wait in seconds the server asked for, if any."""

    reason = "Too Many Requests"

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class InternalServerError(APIStatusError):
    """5xx: the server failed; worth retrying."""

    reason = "Server Error"


_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: PaymentRequiredError,
    403: PermissionDeniedError,
    404: NotFoundError,
    408: RequestTimeoutError,
    409: ConflictError,
    422: UnprocessableEntityError,
    429: RateLimitError,
}


def error_class_for_status(status_code: int) -> type[APIStatusError]:
    """The exception class for an HTTP status (5xx share one class)."""
    if status_code >= 500:
        return InternalServerError
    return _BY_STATUS.get(status_code, APIStatusError)
