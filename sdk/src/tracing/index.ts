// @kasbridge/sdk/tracing: the SDK's spans and trace context propagation (@opentelemetry/api only).

export { TRACE_CONTEXT_KEYS, Tracing, recordedTraceId } from "./tracing.js";
export type { TracingOptions } from "./tracing.js";
export {
  ATTR_AGENT_ID,
  ATTR_AGENT_MODULE,
  ATTR_CALLER_KIND,
  ATTR_GRPC_STATUS,
  ATTR_K8S_NAMESPACE,
  ATTR_K8S_RESOURCE,
  ATTR_K8S_VERB,
  rpcSpan,
} from "./semconv.js";
