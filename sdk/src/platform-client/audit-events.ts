/** What KAS reports to the platform's audit trail (docs/observability.md#audit-trail). */
export type KasAuditEvent = KubernetesApiRequestEvent | AgentConnectionEvent;

/** Who made a request through the Kubernetes API proxy. Never a token. */
export type AuditActor =
  | { kind: "ci_job"; user_id: number; username: string; job_id: number; project_id: number; pipeline_id: number }
  | { kind: "user"; user_id: number; username: string; access_type: string }
  /** The credential was refused: its kind as far as it can be told (ci, pat, …), nothing of its value. */
  | { kind: "refused"; credential: string };

/** One request through the Kubernetes API proxy, allowed or refused. */
export interface KubernetesApiRequestEvent {
  kind: "k8s_api_request";
  /** ISO 8601, when the request began. */
  at: string;
  /** The agent named by the credential; null when none could be read. */
  agent_id: number | null;
  actor: AuditActor;
  /** The identity the cluster saw (impersonation); null for the agent's own identity or a refused request. */
  impersonated: { username: string; groups: string[] } | null;
  method: string;
  /** The path without the query (a query may carry anything). */
  path: string;
  verb: string;
  resource: string;
  namespace: string;
  name: string;
  /** The HTTP status answered. */
  status: number;
  duration_ms: number;
  /** Why KAS refused or ended the request, when it did. */
  error: string | null;
  /** W3C trace id of the request, when tracing is on. */
  trace_id: string | null;
}

/** An agent process registered with KAS, or its connection ended. */
export interface AgentConnectionEvent {
  kind: "agent_connected" | "agent_disconnected";
  at: string;
  agent_id: number;
  /** The agent process (GitLab's pod_id, decimal), its pod and version. */
  connection_id: string;
  pod_name: string;
  pod_namespace: string;
  agent_version: string;
  kas_instance: string;
}
