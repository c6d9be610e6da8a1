/**
 * Distributed tracing in the SDK: OpenTelemetry spans through @opentelemetry/api only (as a
 * library should), with the span context carried across processes as W3C `traceparent`: in HTTP
 * headers (the Kubernetes API proxy, the API server) and in the tunnel's RequestInfo metadata (the
 * way GitLab carries gRPC metadata through the tunnel).
 *
 * Contexts are passed explicitly (no context manager is needed): a request's span context is
 * extracted from what it carries and handed to the spans it starts.
 *
 * Off unless the application sets it up: by default the tracer provider and the propagator are
 * OpenTelemetry's global ones, which are no-ops until an application registers real ones. Spans
 * are then non-recording, and the code that fills their attributes is skipped (`isRecording()`).
 */
import {
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  propagation,
  trace,
  type Attributes,
  type Context,
  type Span,
  type TextMapGetter,
  type TextMapPropagator,
  type TextMapSetter,
  type Tracer,
  type TracerProvider,
} from "@opentelemetry/api";
import { create } from "@bufbuild/protobuf";
import { ValuesSchema } from "../gen/gitlab/agent/prototool/prototool_pb.js";
import type { MetaMap } from "../util/metadata.js";

export { SpanKind, SpanStatusCode, type Attributes, type Context, type Span };

/** Where spans go and how their context crosses processes. */
export interface TracingOptions {
  /**
   * The tracer provider spans are started from. Default: OpenTelemetry's global provider (a no-op
   * until the application registers one).
   */
  tracerProvider?: TracerProvider;
  /**
   * How a span context is written to and read from headers and tunnel metadata. Default:
   * OpenTelemetry's global propagator (a no-op until the application registers one; the SDK's
   * `NodeTracerProvider.register()` sets W3C trace context). The `@kasbridge/sdk/otlp` setup
   * passes W3C trace context (`traceparent`, `tracestate`).
   */
  propagator?: TextMapPropagator;
}

/** The names of the headers / metadata keys that carry a span context (W3C trace context). */
export const TRACE_CONTEXT_KEYS = ["traceparent", "tracestate"] as const;

/** Node's incoming headers (lower-case names, repeated headers as arrays). */
type NodeHeaders = Record<string, string | string[] | undefined>;

const nodeHeadersGetter: TextMapGetter<NodeHeaders> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => carrier[key],
};

const headersGetter: TextMapGetter<Headers> = {
  keys: (carrier) => [...carrier.keys()],
  get: (carrier, key) => carrier.get(key) ?? undefined,
};

const metaGetter: TextMapGetter<MetaMap> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => carrier[key]?.value,
};

const metaSetter: TextMapSetter<MetaMap> = {
  set: (carrier, key, value) => {
    carrier[key] = create(ValuesSchema, { value: [value] });
  },
};

const recordSetter: TextMapSetter<Record<string, string | string[] | number | undefined>> = {
  set: (carrier, key, value) => {
    carrier[key] = value;
  },
};

/** A tracer and a propagator, as the SDK's assemblies hand them to their modules. */
export class Tracing {
  readonly tracer: Tracer;
  private readonly propagator: Pick<TextMapPropagator, "inject" | "extract">;

  /** @param name the instrumentation scope (e.g. "@kasbridge/sdk/kas"). */
  constructor(options: TracingOptions = {}, name = "@kasbridge/sdk") {
    this.tracer = (options.tracerProvider ?? trace.getTracerProvider()).getTracer(name);
    this.propagator = options.propagator ?? propagation;
  }

  /** The context of the remote parent carried by Node's incoming headers (ROOT when none). */
  fromNodeHeaders(headers: NodeHeaders): Context {
    return this.propagator.extract(ROOT_CONTEXT, headers, nodeHeadersGetter);
  }

  /** The context of the remote parent carried by fetch-style headers (ROOT when none). */
  fromHeaders(headers: Headers): Context {
    return this.propagator.extract(ROOT_CONTEXT, headers, headersGetter);
  }

  /** The context of the remote parent carried by tunnel metadata (ROOT when none). */
  fromMeta(meta: MetaMap): Context {
    return this.propagator.extract(ROOT_CONTEXT, meta, metaGetter);
  }

  /** A context whose span is `span` (the parent of the spans started with it). */
  withSpan(span: Span): Context {
    return trace.setSpan(ROOT_CONTEXT, span);
  }

  /**
   * Starts a span under `parent`. Attributes that cost something to compute belong in
   * `if (span.isRecording()) span.setAttributes(...)`.
   */
  startSpan(name: string, kind: SpanKind, parent: Context, attributes?: Attributes): Span {
    return this.tracer.startSpan(name, { kind, attributes }, parent);
  }

  /**
   * Makes `meta` carry `span`'s context instead of whatever trace context it carried, when the
   * span is recording; leaves it alone otherwise (a caller's `traceparent` then travels on as is).
   */
  injectMeta(span: Span, meta: MetaMap): void {
    if (!span.isRecording()) return;
    dropTraceContext(meta);
    this.propagator.inject(trace.setSpan(ROOT_CONTEXT, span), meta, metaSetter);
  }

  /** As {@link injectMeta}, for a header multimap (a platform request's headers). */
  injectMultiMap(span: Span, headers: Record<string, string[]>): void {
    if (!span.isRecording()) return;
    dropTraceContext(headers);
    this.propagator.inject(trace.setSpan(ROOT_CONTEXT, span), headers, multiMapSetter);
  }

  /** As {@link injectMeta}, for outgoing Node headers. */
  injectHeaders(span: Span, headers: Record<string, string | string[] | number | undefined>): void {
    if (!span.isRecording()) return;
    dropTraceContext(headers);
    this.propagator.inject(trace.setSpan(ROOT_CONTEXT, span), headers, recordSetter);
  }
}

const multiMapSetter: TextMapSetter<Record<string, string[]>> = {
  set: (carrier, key, value) => {
    carrier[key] = [value];
  },
};

/** Removes the trace context keys from a header or metadata map, whatever their case. */
function dropTraceContext(map: Record<string, unknown>): void {
  for (const name of Object.keys(map)) {
    if ((TRACE_CONTEXT_KEYS as readonly string[]).includes(name.toLowerCase())) delete map[name];
  }
}

/** The trace id of a recording span, else null (what the audit record's `trace_id` holds). */
export function recordedTraceId(span: Span | undefined): string | null {
  return span?.isRecording() ? span.spanContext().traceId : null;
}

