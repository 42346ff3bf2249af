"""Tracing and logging: OpenTelemetry spans (GenAI conventions), W3C trace context carried in
Pub/Sub attributes, and JSON log lines with Cloud Logging's trace correlation fields."""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

_PROPAGATOR = TraceContextTextMapPropagator()
_configured = threading.Lock()
_done = False
_project = ""
tracer = trace.get_tracer("cloudagents")


class JsonLinesSpanExporter(SpanExporter):
    """Appends finished spans as JSON lines to a file (local stack and tests read it)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            ctx = span.get_span_context()
            parent = span.parent
            lines.append(
                json.dumps(
                    {
                        "name": span.name,
                        "trace_id": format(ctx.trace_id, "032x") if ctx else None,
                        "span_id": format(ctx.span_id, "016x") if ctx else None,
                        "parent_id": format(parent.span_id, "016x") if parent else None,
                        "service": span.resource.attributes.get("service.name"),
                        "attributes": dict(span.attributes or {}),
                        "start": span.start_time,
                        "end": span.end_time,
                    },
                    default=str,
                )
            )
        with self._lock, self.path.open("a") as out:
            out.write("\n".join(lines) + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


def configure(service_name: str, exporter: str, project: str) -> None:
    """Install the tracer provider and JSON logging once per process.

    ``exporter``: ``none``, ``console``, ``gcp`` (Cloud Trace) or ``file:/path/spans.jsonl``.
    """
    global _done, _project
    with _configured:
        if _done:
            return
        _done = True
        _project = project
        provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
        if exporter == "console":
            provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
        elif exporter == "gcp":
            from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter

            provider.add_span_processor(
                BatchSpanProcessor(CloudTraceSpanExporter(project_id=project))  # type: ignore[no-untyped-call]
            )
        elif exporter.startswith("file:"):
            provider.add_span_processor(SimpleSpanProcessor(JsonLinesSpanExporter(exporter[5:])))
        trace.set_tracer_provider(provider)
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter(service_name))
        root = logging.getLogger()
        root.handlers = [handler]
        root.setLevel(logging.INFO)


def current_traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, for a Pub/Sub message attribute."""
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    return carrier.get("traceparent")


def context_from(attributes: Mapping[str, str]) -> otel_context.Context:
    """The trace context carried by a message's attributes (empty context when absent)."""
    return _PROPAGATOR.extract({k: v for k, v in attributes.items() if k == "traceparent"})


def genai_attributes(
    *, system: str, model: str, input_tokens: int, output_tokens: int
) -> dict[str, Any]:
    """OpenTelemetry GenAI semantic-convention attributes for a model call span."""
    return {
        "gen_ai.operation.name": "chat",
        "gen_ai.system": system,
        "gen_ai.request.model": model,
        "gen_ai.usage.input_tokens": input_tokens,
        "gen_ai.usage.output_tokens": output_tokens,
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line; Cloud Logging reads ``severity`` and the trace fields."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "severity": record.levelname,
            "message": record.getMessage(),
            "logger": record.name,
            "service": self.service,
        }
        span = trace.get_current_span().get_span_context()
        if span.is_valid:
            trace_id = format(span.trace_id, "032x")
            entry["logging.googleapis.com/trace"] = f"projects/{_project}/traces/{trace_id}"
            entry["logging.googleapis.com/spanId"] = format(span.span_id, "016x")
            entry["logging.googleapis.com/trace_sampled"] = span.trace_flags.sampled
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)
