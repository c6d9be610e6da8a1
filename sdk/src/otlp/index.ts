// @kasbridge/sdk/otlp: OTLP/HTTP export of the SDK's spans (GitLab's observability.tracing).
// Its OpenTelemetry SDK packages are optional peer dependencies: install them to use it.

export { startOtlpTracing } from "./otlp-tracing.js";
export type { OtlpTracing, OtlpTracingOptions } from "./otlp-tracing.js";
