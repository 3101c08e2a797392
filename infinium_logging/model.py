"""The trace model: ``TaskData`` and its parts as msgspec Structs, and their exact wire encoding.

Over the module budget as one thing: the structs and the encoder are written for each other
(normalised when built so that ``encode_task`` is one msgspec call over wire-shaped structs
sharing the trace's objects), and the byte-for-byte promise is kept by reading them together.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Callable, Iterable
from typing import Any, ClassVar, Final

import msgspec

__all__ = [
    "MAX_BODY_BYTES",
    "SECTION_NAMES",
    "ApiResponse",
    "BatchResult",
    "Content",
    "Customer",
    "Development",
    "EnvironmentContext",
    "ErrorDetail",
    "ExecutionStep",
    "Executive",
    "ExpectedOutcome",
    "General",
    "LlmCall",
    "LlmUsage",
    "Marketing",
    "Project",
    "PromptContent",
    "Research",
    "Sales",
    "Support",
    "PromptStudio",
    "PromptUse",
    "TaskData",
    "TimeTracking",
    "ToolCall",
    "encode_task",
    "format_timestamp",
    "utc_now_iso",
]

#: The platform refuses bodies larger than this (UTF-8 JSON bytes).
MAX_BODY_BYTES: Final = 1_048_576

#: Domain sections, in the order the platform expects them under ``sections``.
SECTION_NAMES: Final = (
    "time_tracking",
    "customer",
    "support",
    "sales",
    "marketing",
    "content",
    "research",
    "project",
    "development",
    "executive",
    "general",
)


class _ExpFloat(float):
    """A float that the official client would print in exponent form (``2.5e-05``).

    msgspec writes such values positionally (``0.000025``); both are valid JSON,
    but the body must be byte-for-byte what the official client sends, so these
    few values are marked when a trace is built and written with ``repr``.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return float.__repr__(self)


class _NonFinite(float):
    """NaN or an infinity in a float field, marked when the trace is built.

    JSON has neither, and msgspec would write ``null``, which the platform
    refuses: :func:`encode_task` raises instead.  Lenient reading replaces
    them; strict reading refuses them.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return float.__repr__(self)


class _NotFinite(ValueError):
    """Raised by the encoder at a ``_NonFinite``; :func:`encode_task` says where."""


def _enc_hook(obj: Any) -> Any:
    if type(obj) is _ExpFloat:
        return msgspec.Raw(float.__repr__(obj).encode())
    if type(obj) is _NonFinite:
        raise _NotFinite
    # Subclasses msgspec does not take (numpy's float64, a str subclass): json.dumps writes
    # them as their base type, and so does the body.
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise _NotFinite
        return msgspec.Raw(float.__repr__(obj).encode())
    if isinstance(obj, str):
        return str.__str__(obj)
    if isinstance(obj, int):
        return int(obj)
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


# Free-form values (ExecutionStep.metadata, EnvironmentContext.custom_tags,
# Development.performance_metrics) are written as they are, as json.dumps writes them: their
# exponent-form floats are marked by those classes' own __post_init__ (not a loop in
# _Model's, which every struct built would pay for).
def _mark_free(value: Any, depth: int = 0) -> Any:
    """``value`` (a free-form value) with its exponent-form floats marked, as ``_mark_float``
    marks a float field; the same object when there is none (the caller's dict is never
    changed: a marked one is a copy)."""
    if isinstance(value, float):
        kind = type(value)
        if kind is _ExpFloat or kind is _NonFinite:
            return value
        if "e" in float.__repr__(value) and math.isfinite(value):
            return _ExpFloat(value)
        # A subclass (numpy's float64) is written by json.dumps with float's repr: a float.
        return value if kind is float else float(value)
    if depth >= _MARK_DEPTH:  # encode_task says what is nested past the recursion limit
        return value
    pairs: Iterable[tuple[Any, Any]]
    copy: Callable[[Any], Any]
    if isinstance(value, dict):  # an OrderedDict or defaultdict is written as a dict too
        pairs, copy = value.items(), dict
    elif type(value) is list or type(value) is tuple:
        pairs, copy = enumerate(value), list
    else:
        return value
    marked: Any = None
    for key, item in pairs:
        kind = type(item)
        # Text and whole numbers are most of it: no call for them (steps are built by the
        # thousand on the sender threads).
        if kind is str or kind is int or kind is bool or item is None:
            continue
        if kind is float and "e" not in float.__repr__(item):
            continue
        new = _mark_free(item, depth + 1)
        if new is not item:
            if marked is None:
                marked = copy(value)
            marked[key] = new
    if marked is None:
        return value
    return tuple(marked) if type(value) is tuple else marked


#: How deep free-form values are searched for floats to mark: far below the recursion limit
#: (marking happens in constructors, which must not raise), far beyond what traces nest.
_MARK_DEPTH: Final = 200


def _builtin_float(obj: Any) -> Any:
    """``enc_hook`` for ``msgspec.to_builtins``: the marked floats are plain floats there, and
    subclasses of float, str and int their base type."""
    if isinstance(obj, float):
        return float(obj)
    if isinstance(obj, str):
        return str.__str__(obj)
    if isinstance(obj, int):
        return int(obj)
    raise NotImplementedError(f"cannot convert {type(obj).__name__}")


def _mark_float(value: float) -> float:
    """``value`` as an ``_ExpFloat`` when ``repr`` uses an exponent, a ``_NonFinite`` when it
    is NaN or an infinity (the only reprs with an ``n``: ``nan``, ``inf``)."""
    if type(value) is float:
        text = float.__repr__(value)
        if "e" in text or "n" in text:
            return _ExpFloat(value) if math.isfinite(value) else _NonFinite(value)
    return value


class _Model(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    """Base of every wire type: omits ``None`` fields and normalises empties once, at build time.

    The official client leaves out ``None`` values, nested objects that end up
    empty, empty lists and ``None`` items of lists.  Doing that here, when a
    struct is constructed or decoded, keeps :func:`encode_task` a single
    msgspec call with no Python pass over the tree.
    """

    # Per-class tables filled in by _prepare(): which fields need which normalisation.
    _lists: ClassVar[tuple[str, ...]] = ()
    _objects: ClassVar[tuple[str, ...]] = ()
    _floats: ClassVar[tuple[str, ...]] = ()
    _all_optional: ClassVar[bool] = False

    def __post_init__(self) -> None:
        for name in self._floats:
            value = getattr(self, name)
            if type(value) is float:
                text = float.__repr__(value)
                if "e" in text or "n" in text:  # exponent form, or nan / inf
                    setattr(
                        self, name, _ExpFloat(value) if math.isfinite(value) else _NonFinite(value)
                    )
        for name in self._lists:
            value = getattr(self, name)
            if isinstance(value, (list, tuple)) and (not value or None in value):
                kept = [item for item in value if item is not None]
                setattr(self, name, kept or None)
        for name in self._objects:
            value = getattr(self, name)
            if isinstance(value, _Model) and value._is_empty():
                setattr(self, name, None)

    def _is_empty(self) -> bool:
        if not self._all_optional:
            return False
        return all(getattr(self, name) is None for name in self.__struct_fields__)


# --- domain sections -------------------------------------------------------------------------


class TimeTracking(_Model):
    """Start and end timestamps of the task (ISO 8601)."""

    start_time: str | None = None
    end_time: str | None = None


class Customer(_Model):
    """Who the task was done for."""

    customer_name: str | None = None
    customer_email: str | None = None
    customer_phone: str | None = None
    customer_address: str | None = None
    client_company: str | None = None
    client_industry: str | None = None


class Support(_Model):
    """Support ticket context."""

    call_id: str | None = None
    issue_description: str | None = None
    issue_type: str | None = None
    resolution: str | None = None
    priority: str | None = None
    follow_up_required: bool | None = None
    agent_notes: str | None = None


class Sales(_Model):
    """Sales pipeline context."""

    lead_source: str | None = None
    sales_stage: str | None = None
    deal_value: int | float | None = None
    conversion_rate: int | float | None = None
    sales_notes: str | None = None


class Marketing(_Model):
    """Marketing campaign context."""

    campaign_name: str | None = None
    campaign_type: str | None = None
    target_audience: str | None = None
    marketing_channel: str | None = None
    engagement_metrics: str | None = None
    conversion_metrics: str | None = None


class Content(_Model):
    """Content creation context."""

    content_type: str | None = None
    content_format: str | None = None
    content_length: int | None = None
    content_topic: str | None = None
    target_platform: str | None = None


class Research(_Model):
    """Research task context."""

    research_topic: str | None = None
    research_method: str | None = None
    data_sources: str | list[str] | None = None
    research_findings: str | None = None
    analysis_type: str | None = None
    sources_consulted: int | None = None
    key_findings: list[str] | None = None
    confidence_level: str | None = None
    data_quality: str | None = None


class Project(_Model):
    """Project management context."""

    project_name: str | None = None
    project_phase: str | None = None
    deliverables: str | list[str] | None = None
    stakeholders: str | list[str] | None = None
    project_status: str | None = None
    milestone_achieved: str | None = None
    task_priority: str | None = None
    resource_utilization: int | float | None = None
    risk_assessment: str | None = None
    blockers: list[str] | None = None


class Development(_Model):
    """Software development context."""

    programming_language: str | None = None
    framework_used: str | None = None
    bugs_found: int | None = None
    bugs_fixed: int | None = None
    test_coverage: int | float | None = None
    performance_metrics: str | dict[str, Any] | None = None
    deployment_status: str | None = None
    technical_debt: str | None = None
    files_modified: list[str] | None = None
    tests_run: int | None = None
    tests_passed: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.performance_metrics, dict):
            self.performance_metrics = _mark_free(self.performance_metrics)
        _Model.__post_init__(self)


class Executive(_Model):
    """Executive assistant / meeting context."""

    meeting_type: str | None = None
    attendees_count: int | None = None
    agenda_items: str | list[str] | None = None
    action_items: str | list[str] | None = None
    calendar_conflicts: int | None = None
    decisions_made: list[str] | None = None


# --- trace enrichment ------------------------------------------------------------------------


class ErrorDetail(_Model):
    """A factual error record.

    ``recoverable`` and ``retry_count`` are always sent, defaults included, as
    the official client does: a factory default is never "the default" for
    msgspec's ``omit_defaults``, which is exactly what keeps them on the wire.
    ``None`` in either means "not given" and leaves the key out, as the official
    client's ``dataclass_to_dict`` does (it reads back as ``msgspec.UNSET``).
    """

    error_type: str
    message: str
    recoverable: bool | msgspec.UnsetType | None = msgspec.field(default_factory=bool)
    retry_count: int | msgspec.UnsetType | None = msgspec.field(default_factory=int)
    stack_trace: str | None = None
    error_code: str | None = None

    def __post_init__(self) -> None:
        if self.recoverable is None:
            self.recoverable = msgspec.UNSET
        if self.retry_count is None:
            self.retry_count = msgspec.UNSET
        super().__post_init__()


class ToolCall(_Model):
    """A tool or API invocation."""

    tool_name: str
    duration_ms: int | None = None
    input_summary: str | None = None
    output_summary: str | None = None
    error: ErrorDetail | None = None
    http_status: int | None = None


class LlmCall(_Model):
    """A single LLM invocation."""

    model: str
    provider: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency_ms: int | None = None
    temperature: int | float | None = None
    purpose: str | None = None


class ExecutionStep(_Model):
    """One thing the agent did. ``metadata`` is free-form and sent as given."""

    step_number: int
    action: str
    description: str
    duration_ms: int | None = None
    input_preview: str | None = None
    output_preview: str | None = None
    error: ErrorDetail | None = None
    tool_call: ToolCall | None = None
    llm_call: LlmCall | None = None
    metadata: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.metadata, dict):
            self.metadata = _mark_free(self.metadata)
        _Model.__post_init__(self)


class ExpectedOutcome(_Model):
    """What Maestro grades the trace against."""

    task_objective: str
    required_deliverables: list[str] | None = None
    constraints: list[str] | None = None
    acceptance_criteria: list[str] | None = None


class EnvironmentContext(_Model):
    """Runtime metadata about where the agent ran."""

    framework: str | None = None
    framework_version: str | None = None
    python_version: str | None = None
    sdk_version: str | None = None
    runtime: str | None = None
    region: str | None = None
    custom_tags: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if isinstance(self.custom_tags, dict):
            self.custom_tags = _mark_free(self.custom_tags)
        _Model.__post_init__(self)


class LlmUsage(_Model):
    """Aggregate token and cost statistics across the whole trace."""

    model: str | None = None
    provider: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None
    estimated_cost_usd: int | float | None = None
    api_calls_count: int | None = None
    total_latency_ms: int | None = None
    calls: list[LlmCall] | None = None


class General(_Model):
    """General-purpose context."""

    tools_used: str | list[str] | None = None
    agent_notes: str | None = None
    errors_encountered: list[ErrorDetail] | None = None
    retries: int | None = None
    warnings: list[str] | None = None
    external_apis_called: list[str] | None = None
    data_sources_accessed: list[str] | None = None
    tags: list[str] | None = None


class PromptUse(msgspec.Struct, kw_only=True):
    """One Prompt Studio prompt fetched while a trace ran (``get_prompt`` inside a task).

    Written as the official client writes it: every key, ``variables_used`` as
    ``null`` when the prompt was fetched without variables.
    """

    prompt_id: str
    prompt_name: str
    version: int
    source: str = "prompt_studio"
    #: ``None`` is written ``null`` (what the official client writes for a fetch without
    #: variables); left out when not given at all, as the official client passes its dict on.
    variables_used: list[str] | msgspec.UnsetType | None = msgspec.UNSET
    fetched_at: str


class PromptStudio(msgspec.Struct, kw_only=True):
    """The ``prompt_studio`` section: the prompts a trace used, linked to Prompt Studio."""

    prompts_used: list[PromptUse]


class TaskData(_Model):
    """One trace: a complete record of an agent's task.

    Field names, order and defaults are those of the official client's
    ``TaskData``.  Build one directly, or from a dict with
    :func:`infinium_logging.convert.to_task`; send it with an exporter or encode it with
    :func:`encode_task`.
    """

    name: str
    description: str
    current_datetime: str
    duration: float
    time_tracking: TimeTracking | None = None
    customer: Customer | None = None
    support: Support | None = None
    sales: Sales | None = None
    marketing: Marketing | None = None
    content: Content | None = None
    research: Research | None = None
    project: Project | None = None
    development: Development | None = None
    executive: Executive | None = None
    general: General | None = None
    llm_usage: LlmUsage | None = None
    input_summary: str | None = None
    output_summary: str | None = None
    steps: list[ExecutionStep] | None = None
    expected_outcome: ExpectedOutcome | None = None
    environment: EnvironmentContext | None = None
    errors: list[ErrorDetail] | None = None
    prompt_studio: PromptStudio | None = None

    def __post_init__(self) -> None:
        duration = self.duration
        if type(duration) is int:
            self.duration = duration = float(duration)
        super().__post_init__()


# --- API results -----------------------------------------------------------------------------


class ApiResponse(msgspec.Struct):
    """The outcome of one request: ``data["traceId"]`` identifies a stored trace."""

    success: bool
    status_code: int | None = None
    message: str = ""
    data: dict[str, Any] | None = None

    @property
    def trace_id(self) -> str | None:
        """The platform's id of the stored trace, when there is one."""
        if self.data is None:
            return None
        value = self.data.get("traceId")
        return value if isinstance(value, str) else None


class BatchResult(msgspec.Struct):
    """Outcome of ``Exporter.send_batch``: counts, one response per task (input order), errors."""

    successful: int
    failed: int
    results: list[ApiResponse]
    errors: list[str]
    total: int = -1

    def __post_init__(self) -> None:
        if self.total < 0:
            self.total = self.successful + self.failed

    @property
    def total_tasks(self) -> int:
        """Alias of ``total`` (the JavaScript client's ``totalTasks``)."""
        return self.total

    @property
    def successful_tasks(self) -> int:
        """Alias of ``successful`` (the JavaScript client's ``successfulTasks``)."""
        return self.successful

    @property
    def failed_tasks(self) -> int:
        """Alias of ``failed`` (the JavaScript client's ``failedTasks``)."""
        return self.failed


class PromptContent(msgspec.Struct):
    """Prompt Studio content."""

    prompt_id: str
    name: str
    version: int
    content: str
    created_at: str
    rendered_content: str | None = None


# --- normalisation tables --------------------------------------------------------------------


def _prepare(cls: type[_Model]) -> None:
    lists: list[str] = []
    objects: list[str] = []
    floats: list[str] = []
    all_optional = True
    for field in msgspec.structs.fields(cls):
        if field.required:
            all_optional = False
        text = str(field.type)
        if "list" in text:
            lists.append(field.name)
        if "float" in text:
            floats.append(field.name)
        if any(isinstance(arg, type) and issubclass(arg, _Model) for arg in _args(field.type)):
            objects.append(field.name)
    cls._lists = tuple(lists)
    cls._objects = tuple(objects)
    cls._floats = tuple(floats)
    cls._all_optional = all_optional


def _args(tp: Any) -> tuple[Any, ...]:
    args = getattr(tp, "__args__", None)
    return tuple(args) if args else (tp,)


_MODEL_TYPES: Final[tuple[type[_Model], ...]] = (
    TimeTracking,
    Customer,
    Support,
    Sales,
    Marketing,
    Content,
    Research,
    Project,
    Development,
    Executive,
    General,
    ErrorDetail,
    ToolCall,
    LlmCall,
    ExecutionStep,
    ExpectedOutcome,
    EnvironmentContext,
    LlmUsage,
    TaskData,
)
for _cls in _MODEL_TYPES:
    _prepare(_cls)


# --- wire encoding ---------------------------------------------------------------------------


class _WireSections(msgspec.Struct, omit_defaults=True):
    """``sections`` on the wire: the domain sections that are set, in documented order."""

    time_tracking: TimeTracking | None = None
    customer: Customer | None = None
    support: Support | None = None
    sales: Sales | None = None
    marketing: Marketing | None = None
    content: Content | None = None
    research: Research | None = None
    project: Project | None = None
    development: Development | None = None
    executive: Executive | None = None
    general: General | None = None


class _WireTask(msgspec.Struct, omit_defaults=True):
    """A ``TaskData`` in wire order; shares the nested objects, copies nothing."""

    name: str
    description: str
    current_datetime: str
    duration: float
    input_summary: str | None = None
    output_summary: str | None = None
    expected_outcome: ExpectedOutcome | None = None
    steps: list[ExecutionStep] | None = None
    errors: list[ErrorDetail] | None = None
    llm_usage: LlmUsage | None = None
    sections: _WireSections | None = None
    environment: EnvironmentContext | None = None
    prompt_studio: PromptStudio | None = None


_ENCODER: Final = msgspec.json.Encoder(enc_hook=_enc_hook)


def _section(value: Any) -> Any:
    # Re-checked here (cheaply: one C-level comparison) for traces changed after they were built.
    if value is None or value == _EMPTY.get(type(value)):
        return None
    return value


def encode_task(task: TaskData) -> bytes:
    """Return the exact JSON body the official client would POST for ``task``.

    Keys in the platform's priority order, domain sections nested under
    ``sections``, no ``null`` anywhere, compact UTF-8.  Empties were dropped
    when the trace was built, so this is one msgspec call over a wire-shaped
    struct that shares the trace's nested objects.

    Raises ``ValueError`` for what JSON cannot carry: a NaN or infinity in a
    float field (naming it, e.g. ``duration: expected a finite number, got
    nan``), or a free-form value nested past the recursion limit.  Free-form
    values (``metadata``, ``custom_tags``, ``performance_metrics``) are written
    as they are: :func:`~infinium_logging.convert.to_task` checks them.
    """
    tt = task.time_tracking
    cu = task.customer
    su = task.support
    sa = task.sales
    ma = task.marketing
    co = task.content
    re = task.research
    pr = task.project
    de = task.development
    ex = task.executive
    ge = task.general
    sections = None
    if not (
        tt is None
        and cu is None
        and su is None
        and sa is None
        and ma is None
        and co is None
        and re is None
        and pr is None
        and de is None
        and ex is None
        and ge is None
    ):
        sections = _WireSections(
            _section(tt),
            _section(cu),
            _section(su),
            _section(sa),
            _section(ma),
            _section(co),
            _section(re),
            _section(pr),
            _section(de),
            _section(ex),
            _section(ge),
        )
        if sections == _EMPTY_SECTIONS:
            sections = None
    duration = task.duration
    if type(duration) is not _ExpFloat and type(duration) is not _NonFinite:
        duration = _mark_float(float(duration))
    wire = _WireTask(
        task.name,
        task.description,
        task.current_datetime,
        duration,
        task.input_summary,
        task.output_summary,
        task.expected_outcome,
        task.steps or None,
        task.errors or None,
        _section(task.llm_usage),
        sections,
        _section(task.environment),
        task.prompt_studio,
    )
    try:
        return _ENCODER.encode(wire)
    except (RecursionError, _NotFinite) as exc:
        raise _unencodable(task, duration, exc) from None


def _unencodable(task: TaskData, duration: object, exc: Exception) -> ValueError:
    """The error of a trace that JSON cannot carry, saying where and why."""
    if isinstance(exc, RecursionError):  # a free-form value nested past the recursion limit
        return ValueError(
            "the trace is nested too deeply to encode (a free-form value such as metadata "
            "nests containers deeper than the interpreter's recursion limit)"
        )
    where, value = _non_finite(task, "") or ("duration", duration)
    return ValueError(
        f"{where}: expected a finite number, got {value!r} (JSON has no NaN or infinity, "
        "and the platform takes no null)"
    )


def _non_finite(obj: _Model, path: str) -> tuple[str, float] | None:
    """Where the first NaN or infinity of a float field is, and what it is."""
    for name in obj.__struct_fields__:
        value = getattr(obj, name)
        where = f"{path}.{name}" if path else name
        if isinstance(value, float):
            if not math.isfinite(value):
                return where, value
        elif isinstance(value, _Model):
            found = _non_finite(value, where)
            if found is not None:
                return found
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, _Model):
                    found = _non_finite(item, f"{where}[{index}]")
                    if found is not None:
                        return found
    return None


_EMPTY_SECTIONS: Final = _WireSections()
# An empty instance of every all-optional type: "is it empty?" becomes one comparison.
_EMPTY: Final[dict[type, _Model]] = {cls: cls() for cls in _MODEL_TYPES if cls._all_optional}


# --- timestamps ------------------------------------------------------------------------------


def format_timestamp(timestamp: float) -> str:
    """Format a POSIX timestamp as UTC ISO 8601 with microseconds and ``Z``."""
    moment = _dt.datetime.fromtimestamp(timestamp, tz=_dt.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utc_now_iso() -> str:
    """The current time as UTC ISO 8601 with microseconds and ``Z``."""
    return _dt.datetime.now(tz=_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
