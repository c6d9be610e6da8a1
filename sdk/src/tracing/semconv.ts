/**
 * The span names and attributes kasbridge uses, after OpenTelemetry's semantic conventions for
 * HTTP and RPC (as plain strings: the conventions package is not worth a dependency for a few
 * names), and ours for what they have no name for (docs/observability.md#tracing lists them).
 */
import type { Attributes } from "@opentelemetry/api";

/** The agent a request is for (ours). */
export const ATTR_AGENT_ID = "gitlab.agent.id";
/** The feature that handles it, as GitLab names modules (ours): `kubernetes_api`, … */
export const ATTR_AGENT_MODULE = "gitlab.agent.module";
/** Who called the Kubernetes API proxy: `ci_job` or `user` (ours; never the credential). */
export const ATTR_CALLER_KIND = "gitlab.caller.kind";
/** The Kubernetes verb (`get`, `list`, `watch`, …), resource (`pods`, `deployments.apps`) and namespace of a request (ours). */
export const ATTR_K8S_VERB = "k8s.request.verb";
export const ATTR_K8S_RESOURCE = "k8s.request.resource";
export const ATTR_K8S_NAMESPACE = "k8s.namespace.name";

/**
 * RPC span name and attributes of a gRPC method path ("/pkg.Service/Method"): the name is
 * `pkg.Service/Method`, the attributes `rpc.system`, `rpc.service`, `rpc.method`.
 */
export function rpcSpan(methodPath: string): { name: string; attributes: Attributes } {
  const name = methodPath.startsWith("/") ? methodPath.slice(1) : methodPath;
  const slash = name.lastIndexOf("/");
  return {
    name,
    attributes: { "rpc.system": "grpc", "rpc.service": name.slice(0, slash), "rpc.method": name.slice(slash + 1) },
  };
}

/** `rpc.grpc.status_code` of a call: 0 when it succeeded. */
export const ATTR_GRPC_STATUS = "rpc.grpc.status_code";
