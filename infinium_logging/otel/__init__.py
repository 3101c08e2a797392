"""OpenTelemetry GenAI spans become Infinium steps and LLM usage (extra ``otel``).

    from infinium_logging.otel import instrument
    instrument()   # every LLM and tool call an installed instrumentation sees is a step

``_mapping.py`` reads a span's attributes (OpenTelemetry GenAI conventions, current
and older, and OpenInference's) into the fields of a logged event;
``_processor.py`` is the span processor that puts them in a task or a trace of
their own; ``_instrument.py`` is the one line.  ``import infinium_logging`` never
imports this package, nor OpenTelemetry.
"""

from __future__ import annotations

from ._instrument import INSTRUMENTORS, instrument
from ._processor import OTEL_DROP_REASONS, InfiniumSpanProcessor

__all__ = ["INSTRUMENTORS", "OTEL_DROP_REASONS", "InfiniumSpanProcessor", "instrument"]
