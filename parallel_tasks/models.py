"""Typed models of the Retrieve Task Run Input contract and of this package's own results.

The API models mirror ``openapi.json`` field for field and keep every field they do not know
(``extra="allow"``), so ``model_dump(mode="json", exclude_unset=True)`` gives back the body the API
sent. The live API's newer fields (``openapi-current.json``) are modelled too; values that are
secrets by nature (MCP server headers) are ``SecretStr`` so they never show in a repr or a dump.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, SecretStr, Tag

if TYPE_CHECKING:
    from parallel_tasks.errors import ParallelError

__all__ = [
    "NOT_FETCHED",
    "AuditSummary",
    "AutoSchema",
    "ErrorDetail",
    "ErrorResponse",
    "FetchResult",
    "InputSchema",
    "JsonSchema",
    "McpServer",
    "MetadataValue",
    "OutputSchema",
    "RecordStatus",
    "RunInputRecord",
    "Severity",
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
]


class _ApiModel(BaseModel):
    """Base of the API models: unknown fields are kept, never dropped."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)


class JsonSchema(_ApiModel):
    """JSON schema for a task input or output."""

    json_schema: dict[str, Any] = Field(description="A JSON Schema object.")
    type: Literal["json"] = "json"


class TextSchema(_ApiModel):
    """Text description for a task input or output."""

    description: str | None = None
    type: Literal["text"] = "text"


class AutoSchema(_ApiModel):
    """Auto schema for a task input or output."""

    type: Literal["auto"] = "auto"


def _schema_tag(value: Any) -> str | None:
    """Pick the union member the way the spec's anyOf does: by ``type``, else by shape."""
    if isinstance(value, str):
        return "str"
    if isinstance(value, BaseModel):
        return str(getattr(value, "type", None))
    if isinstance(value, dict):
        declared = value.get("type")
        if declared is not None:
            return declared if isinstance(declared, str) else None
        return "json" if "json_schema" in value else "text"
    return None


OutputSchema = Annotated[
    Annotated[JsonSchema, Tag("json")]
    | Annotated[TextSchema, Tag("text")]
    | Annotated[AutoSchema, Tag("auto")]
    | Annotated[str, Tag("str")],
    Discriminator(_schema_tag),
]
"""An output schema: JSON, text, auto, or a bare string (a text description)."""

InputSchema = Annotated[
    Annotated[JsonSchema, Tag("json")] | Annotated[TextSchema, Tag("text")] | Annotated[str, Tag("str")],
    Discriminator(_schema_tag),
]
"""An input schema: JSON, text, or a bare string (a text description)."""


def normalize_schema(
    schema: JsonSchema | TextSchema | AutoSchema | str | None,
) -> JsonSchema | TextSchema | AutoSchema | None:
    """Return the schema as a model: a bare string becomes the text schema it stands for.

    Example:
        >>> normalize_schema("GDP in USD")
        TextSchema(description='GDP in USD', type='text')
    """
    if isinstance(schema, str):
        return TextSchema(description=schema)
    return schema


class TaskSpec(_ApiModel):
    """Specification for a task: its output schema and optional input schema."""

    output_schema: OutputSchema
    input_schema: InputSchema | None = None

    def normalized_input_schema(self) -> JsonSchema | TextSchema | AutoSchema | None:
        """The input schema with a bare string turned into a TextSchema."""
        return normalize_schema(self.input_schema)

    def normalized_output_schema(self) -> JsonSchema | TextSchema | AutoSchema | None:
        """The output schema with a bare string turned into a TextSchema."""
        return normalize_schema(self.output_schema)


class SourcePolicy(_ApiModel):
    """Source policy for web search results."""

    include_domains: list[str] | None = None
    exclude_domains: list[str] | None = None
    # Kept as the string the API sent (format "date"); validation checks it, parsing must not reject it.
    after_date: str | None = None


class TaskDataSources(_ApiModel):
    """Partner data sources enabled for a run."""

    pay_per_use: list[str] | None = None
    free: list[str] | None = None


class TaskAdvancedSettings(_ApiModel):
    """Advanced search configuration for a task run."""

    location: str | None = None
    data_sources: TaskDataSources | None = None


class McpServer(_ApiModel):
    """MCP server configuration. Header values are credentials: kept as secrets."""

    type: str = "url"
    url: str
    name: str
    headers: dict[str, SecretStr] | None = Field(default=None, repr=False)
    allowed_tools: list[str] | None = None


class Webhook(_ApiModel):
    """Callback URL that receives an HTTP POST when the run completes."""

    url: str
    event_types: list[str] = Field(default_factory=list)


MetadataValue = str | int | float | bool
"""A metadata value as the spec allows it."""


class TaskRunInput(_ApiModel):
    """What a task run was started with: the body of ``GET /v1/tasks/runs/{run_id}/input``.

    Example:
        >>> run_input = TaskRunInput.model_validate({"processor": "base", "input": "What is 2+2?"})
        >>> run_input.processor, run_input.input
        ('base', 'What is 2+2?')
    """

    processor: str
    input: str | dict[str, Any]
    metadata: dict[str, MetadataValue] | None = None
    source_policy: SourcePolicy | None = None
    task_spec: TaskSpec | None = None
    # Newer fields of the live API (openapi-current.json).
    memory_scope_key: str | None = None
    advanced_settings: TaskAdvancedSettings | None = None
    previous_interaction_id: str | None = None
    mcp_servers: list[McpServer] | None = None
    enable_events: bool | None = None
    webhook: Webhook | None = None


class ErrorDetail(_ApiModel):
    """The ``error`` object of the API's error responses (the spec's ``Error`` schema; not an exception)."""

    ref_id: str
    message: str
    detail: dict[str, Any] | None = None


class ErrorResponse(_ApiModel):
    """Response object used for non-200 status codes."""

    type: Literal["error"] = "error"
    error: ErrorDetail


Error = ErrorDetail
"""The spec's name for :class:`ErrorDetail`, kept for existing imports; the package exports ``ErrorDetail``."""

# --- This package's own result types -------------------------------------------------------------

Severity = Literal["error", "warning"]
"""How bad a violation is: an ``error`` makes the input invalid, a ``warning`` does not."""


class Violation(BaseModel):
    """One broken rule in a run input.

    Attributes:
        path: JSON path of the offending value, e.g. ``$.metadata.customer_reference_id``.
        rule: Stable rule name, e.g. ``metadata.key_too_long``.
        severity: ``error`` or ``warning``.
        message: What is wrong, in words.
        preview: The offending value, shortened to at most 80 characters.
    """

    model_config = ConfigDict(frozen=True)

    path: str
    rule: str
    severity: Severity
    message: str
    preview: str = Field(default="", max_length=80)


class ValidationReport(BaseModel):
    """Every violation found in one run input, all at once."""

    model_config = ConfigDict(frozen=True)

    violations: tuple[Violation, ...] = ()

    @property
    def errors(self) -> tuple[Violation, ...]:
        """The violations that make the input invalid."""
        return tuple(v for v in self.violations if v.severity == "error")

    @property
    def warnings(self) -> tuple[Violation, ...]:
        """The violations worth a look that do not make the input invalid."""
        return tuple(v for v in self.violations if v.severity == "warning")

    @property
    def valid(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors

    @property
    def verdict(self) -> Literal["valid", "valid_with_warnings", "invalid"]:
        """One word for dashboards and asset metadata."""
        if self.errors:
            return "invalid"
        return "valid_with_warnings" if self.violations else "valid"


RecordStatus = Literal["ok", "invalid", "not_found", "unauthorized", "failed", "not_stored"]
"""The outcome of auditing one run: fetched and valid, fetched but invalid, why it was not fetched, or
fetched but its record could not be written (``not_stored``, never found in a store)."""

NOT_FETCHED: tuple[RecordStatus, ...] = ("not_found", "unauthorized", "failed")
"""The statuses of a run whose input could not be fetched (or whose record could not be built)."""


class RunInputRecord(BaseModel):
    """The audit record of one run input: which input, spec and metadata a run was started with.

    Stored as canonical JSON; ``sha256`` is the hash of the canonical JSON of ``input`` (redacted): the
    input's identity, which names the content record and shows drift. From ``record_version`` 2 on,
    ``record_sha256`` hashes the whole record (every field but itself), so no field can change unseen;
    version 1 records (written before) carry only the input's hash and are still read.

    Attributes:
        run_id: The Parallel task run id.
        status: ``ok``, ``invalid``, ``not_found``, ``unauthorized``, ``failed`` or ``not_stored``.
        sha256: Hash of the redacted input (``None`` when the input was not fetched).
        previous_sha256: The hash recorded for this run before, if any.
        drift: True when the input changed since it was last recorded.
        record_key: Storage key of the content record.
        fetched_at: When the input was fetched (UTC).
        base_url: The API the input came from.
        flow_run_id: The Prefect flow run that made the record.
        task_run_id: The Prefect task run that made the record.
        processor: The run's processor.
        verdict: ``valid``, ``valid_with_warnings`` or ``invalid``.
        violations: Every validation finding.
        error: Why the input could not be fetched (secrets masked).
        redacted_paths: The JSON paths of ``input`` whose values were masked, sorted (records made
            before this field existed have none and still verify).
        input: The run input with secrets redacted (only in content records).
        record_sha256: Hash of the canonical JSON of this whole record without this field (version 2).
        content_record_sha256: In a ``latest.json`` pointer, the ``record_sha256`` of the content record
            it names (``sha256``, or ``previous_sha256`` after a failed fetch); ``None`` if unknown.
        record_version: 1: only ``input`` is hashed; 2: the whole record is hashed too (set when stored).
    """

    model_config = ConfigDict(frozen=True)

    record_version: Literal[1, 2] = 1
    run_id: str
    status: RecordStatus
    sha256: str | None = None
    previous_sha256: str | None = None
    drift: bool = False
    record_key: str | None = None
    fetched_at: datetime
    base_url: str
    flow_run_id: str | None = None
    task_run_id: str | None = None
    processor: str | None = None
    verdict: Literal["valid", "valid_with_warnings", "invalid"] | None = None
    violations: tuple[Violation, ...] = ()
    error: str | None = None
    redacted_paths: tuple[str, ...] = ()
    input: dict[str, Any] | None = None
    record_sha256: str | None = None
    content_record_sha256: str | None = None


class AuditSummary(BaseModel):
    """What an audit of many runs found, by status.

    Attributes:
        total: Distinct run ids audited.
        counts: Runs per status (``ok``, ``invalid``, ``not_found``, ``unauthorized``, ``failed``, ``not_stored``).
        drifted: Runs whose input changed since it was last recorded.
        duplicates: Run ids given more than once (audited once).
        rows: One summary row per run (run id, status, detail, processor, sha256 prefix, ...), problems first
            (failed, unauthorized, not_found, not_stored, invalid, drift, ok), then by run id; at most
            :data:`parallel_tasks.rendering.SUMMARY_ROWS_MAX` rows (the audit's manifest lists every run).
        manifest_sha256: The sha256 of the manifest this audit wrote (see :mod:`parallel_tasks.manifests`).
    """

    total: int
    counts: dict[str, int]
    drifted: int = 0
    duplicates: int = 0
    rows: list[dict[str, Any]] = Field(default_factory=list)
    manifest_sha256: str | None = None

    @property
    def rows_left_out(self) -> int:
        """Runs past the cap on ``rows``, not in them."""
        return self.total - len(self.rows)

    @property
    def not_fetched(self) -> int:
        """Runs whose input could not be fetched (or whose record could not be built)."""
        return sum(self.counts.get(s, 0) for s in NOT_FETCHED)

    @property
    def not_stored(self) -> int:
        """Runs whose input was fetched but whose record could not be written."""
        return self.counts.get("not_stored", 0)

    def describe(self) -> str:
        """One line for logs and state messages, e.g. ``200 runs: 180 ok, 12 invalid, 8 not_found``."""
        parts = ", ".join(f"{n} {status}" for status, n in self.counts.items() if n)
        extra = f"; {self.drifted} changed since last recorded" if self.drifted else ""
        manifest = f"; manifest sha256 {self.manifest_sha256}" if self.manifest_sha256 else ""
        return f"{self.total} runs: {parts or 'none'}{extra}{manifest}"


@dataclass(frozen=True)
class FetchResult:
    """The outcome of fetching one run's input: either ``run_input`` or ``error`` is set.

    Attributes:
        run_id: The run id as given.
        run_input: The parsed input on success.
        error: The final error (after retries) on failure.
        attempts: Requests made, retries included.
        elapsed_ms: Wall time of the whole fetch, waits included.
    """

    run_id: str
    run_input: TaskRunInput | None = None
    error: ParallelError | None = None
    attempts: int = 0
    elapsed_ms: float = 0.0

    @property
    def ok(self) -> bool:
        """True when the input was fetched."""
        return self.run_input is not None

    def unwrap(self) -> TaskRunInput:
        """The input, or the error raised."""
        if self.run_input is None:
            from parallel_tasks.errors import ParallelError

            raise self.error or ParallelError(f"no input fetched for run {self.run_id!r}")
        return self.run_input
