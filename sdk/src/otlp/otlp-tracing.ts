/**
 * OTLP export of kasbridge's spans, as GitLab's `observability.tracing` sets it up for KAS:
 * OTLP/HTTP with protobuf bodies to one URL, an optional token sent as `Private-Token`, an
 * optional CA certificate for an https endpoint. W3C trace context (`traceparent`, `tracestate`)
 * carries span contexts between processes.
 *
 * What this needs (@opentelemetry/sdk-trace-base, core, resources, exporter-trace-otlp-proto) is
 * an optional peer dependency of @kasbridge/sdk: an application that imports this subpath
 * installs them; one that does not gets none of them.
 *
 * Spans are batched and exported in the background: an endpoint that is down, slow or refusing
 * costs dropped spans (at most 2 048 queued) and a throttled warning, never a request.
 */
import { readFile } from "node:fs/promises";
import type { Attributes } from "@opentelemetry/api";
import { ExportResultCode, W3CTraceContextPropagator, type ExportResult } from "@opentelemetry/core";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-proto";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { BasicTracerProvider, BatchSpanProcessor, type ReadableSpan, type SpanExporter } from "@opentelemetry/sdk-trace-base";
import type { Logger } from "pino";
import type { TracingOptions } from "../tracing/tracing.js";

export interface OtlpTracingOptions {
  /** `service.name` of the spans: "kas", "agentk". */
  serviceName: string;
  /** `service.version`. */
  serviceVersion?: string;
  /** More resource attributes (`service.instance.id`, …). */
  resourceAttributes?: Attributes;
  /**
   * Where spans are sent: the full OTLP/HTTP traces URL, `http://` or `https://`, bodies in
   * protobuf (GitLab's `otlp_endpoint`), e.g. `http://otel-collector:4318/v1/traces`.
   */
  endpoint: string;
  /** A file holding the token sent as the `Private-Token` header (GitLab's `otlp_token_secret_file`). Never logged. */
  tokenSecretFile?: string;
  /** A PEM file of the CA that signed an https endpoint's certificate (GitLab's `otlp_ca_certificate_file`). */
  caCertificateFile?: string;
  /** Where export failures are reported (throttled, at warn). Default: nowhere. */
  logger?: Logger;
  /** How long spans wait to be exported in a batch. Default: OTEL_BSP_SCHEDULE_DELAY, else 5 000 ms (OpenTelemetry's). */
  scheduledDelayMs?: number;
  /** How long one export may take before it is abandoned. Default 10 000 ms. */
  exportTimeoutMs?: number;
}

export interface OtlpTracing {
  /** What `createKasServer` / `createAgent` take as `tracing`. */
  readonly tracing: Required<TracingOptions>;
  /** Exports what is still queued (at most `timeoutMs`, default 5 000) and stops. */
  shutdown(timeoutMs?: number): Promise<void>;
}

/** Reads the files, checks the endpoint and starts the exporter; throws an Error naming the bad setting. */
export async function startOtlpTracing(options: OtlpTracingOptions): Promise<OtlpTracing> {
  const url = parseEndpoint(options.endpoint);
  const headers: Record<string, string> = {};
  if (options.tokenSecretFile) {
    const token = (await readSetting(options.tokenSecretFile, "otlp_token_secret_file")).trim();
    if (!token) throw new Error(`otlp_token_secret_file ${options.tokenSecretFile} is empty`);
    headers["Private-Token"] = token;
  }
  const ca = options.caCertificateFile ? await readSetting(options.caCertificateFile, "otlp_ca_certificate_file") : undefined;
  if (ca !== undefined && url.protocol !== "https:") throw new Error("otlp_ca_certificate_file needs an https:// otlp_endpoint");
  const exporter = new OTLPTraceExporter({
    url: url.href,
    headers,
    timeoutMillis: options.exportTimeoutMs ?? 10_000,
    ...(ca !== undefined ? { httpAgentOptions: { ca } } : {}),
  });
  const provider = new BasicTracerProvider({
    resource: resourceFromAttributes({
      "service.name": options.serviceName,
      ...(options.serviceVersion ? { "service.version": options.serviceVersion } : {}),
      ...options.resourceAttributes,
    }),
    spanProcessors: [
      new BatchSpanProcessor(new ReportingExporter(exporter, url, options.logger), {
        scheduledDelayMillis: options.scheduledDelayMs ?? envMs("OTEL_BSP_SCHEDULE_DELAY") ?? 5_000,
        exportTimeoutMillis: options.exportTimeoutMs ?? 10_000,
      }),
    ],
  });
  options.logger?.info({ endpoint: url.origin + url.pathname, token: Boolean(options.tokenSecretFile), ca: ca !== undefined }, "tracing: exporting spans over OTLP/HTTP");
  let stopping: Promise<void> | undefined;
  return {
    tracing: { tracerProvider: provider, propagator: new W3CTraceContextPropagator() },
    shutdown(timeoutMs = 5_000) {
      stopping ??= (async () => {
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, timeoutMs)));
        await Promise.race([provider.shutdown().catch(() => {}), timeout]);
        clearTimeout(timer);
      })();
      return stopping;
    },
  };
}

/** A positive number of milliseconds from the environment (OpenTelemetry's OTEL_BSP_* variables), else undefined. */
function envMs(name: string): number | undefined {
  const value = Number(process.env[name]);
  return Number.isFinite(value) && value > 0 ? value : undefined;
}

function parseEndpoint(endpoint: string): URL {
  let url: URL;
  try {
    url = new URL(endpoint);
  } catch {
    throw new Error(`otlp_endpoint must be an http:// or https:// URL, got ${JSON.stringify(endpoint)}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") throw new Error(`otlp_endpoint must be an http:// or https:// URL, got ${JSON.stringify(endpoint)}`);
  if (url.username || url.password) throw new Error("otlp_endpoint must not carry credentials: use otlp_token_secret_file");
  return url;
}

async function readSetting(file: string, key: string): Promise<string> {
  try {
    return await readFile(file, "utf8");
  } catch (error) {
    throw new Error(`cannot read ${key} ${file}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`);
  }
}

/** The exporter, with its failures logged: the first one, then at most once a minute, and the recovery. */
class ReportingExporter implements SpanExporter {
  private failing = false;
  private lastReport = 0;
  private dropped = 0;

  constructor(
    private readonly inner: SpanExporter,
    private readonly url: URL,
    private readonly logger: Logger | undefined,
  ) {}

  export(spans: ReadableSpan[], done: (result: ExportResult) => void): void {
    this.inner.export(spans, (result) => {
      if (result.code === ExportResultCode.SUCCESS) {
        if (this.failing) this.logger?.info({ endpoint: this.url.origin, dropped: this.dropped }, "tracing: the OTLP endpoint takes spans again");
        this.failing = false;
        this.dropped = 0;
      } else {
        this.dropped += spans.length;
        const now = Date.now();
        if (!this.failing || now - this.lastReport >= 60_000) {
          this.lastReport = now;
          // The error says what failed (connection refused, HTTP status); the request's headers are not in it.
          this.logger?.warn({ endpoint: this.url.origin, err: result.error?.message, dropped: this.dropped }, "tracing: cannot export spans");
        }
        this.failing = true;
      }
      done(result);
    });
  }

  shutdown(): Promise<void> {
    return this.inner.shutdown();
  }

  forceFlush(): Promise<void> {
    return this.inner.forceFlush?.() ?? Promise.resolve();
  }
}
