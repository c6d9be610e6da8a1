/**
 * The JSON of GitLab's reconcile exchange (`POST …/modules/remote_development/reconcile`), as
 * GitLab's agentk v16 sends and reads it (gla: internal/module/remote_development/agent/reconciler.go):
 * the agent reports what it sees of its workspaces, the platform answers what each should be.
 */

export type UpdateType = "full" | "partial";
export type TerminationProgress = "Terminating" | "Terminated";
/** `applier`: applying `config_to_apply` failed; `kubernetes`: another cluster call (the namespace) failed. */
export type ErrorType = "applier" | "kubernetes";

/** One workspace as the agent reports it. Absent fields are left out of the JSON (Go's omitempty). */
export interface WorkspaceAgentInfo {
  name: string;
  namespace?: string;
  /** The workspace's whole Deployment, as the API server serves it. */
  latest_k8s_deployment_info?: Record<string, unknown>;
  termination_progress?: TerminationProgress;
  error_details?: { error_type: ErrorType; error_message?: string };
}

export interface ReconcileRequestBody {
  update_type: UpdateType;
  /** Always present, `[]` when there is nothing to report. */
  workspace_agent_infos: WorkspaceAgentInfo[];
}

/** One workspace as the platform answers it. */
export interface WorkspaceRailsInfo {
  name: string;
  namespace: string;
  /** The Deployment version the platform has seen ("" when none). */
  deployment_resource_version: string;
  actual_state: string;
  desired_state: string;
  /** Multi-document YAML to apply; "" when there is nothing to apply. */
  config_to_apply: string;
}

export class ReconcileResponseError extends Error {
  override readonly name = "ReconcileResponseError";
}

/** A namespace name the agent may act on: a DNS label (RFC 1123). */
const DNS_LABEL = /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/;

const optionalString = (value: unknown, field: string): string => {
  if (value === undefined || value === null) return "";
  if (typeof value !== "string") throw new ReconcileResponseError(`${field} must be a string`);
  return value;
};

/**
 * Reads the platform's 201 answer: `{"workspace_rails_infos": [...]}`. GitLab's agentk decodes
 * it leniently (absent and null strings are empty); what the agent cannot act on safely (a
 * missing name, a namespace that is not a DNS label) is refused with the field named.
 */
export function parseReconcileResponse(text: string): WorkspaceRailsInfo[] {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new ReconcileResponseError(`the answer is not JSON: ${text.slice(0, 200)}`);
  }
  if (typeof json !== "object" || json === null || Array.isArray(json)) throw new ReconcileResponseError("the answer must be a JSON object");
  const infos = (json as { workspace_rails_infos?: unknown }).workspace_rails_infos;
  if (infos === undefined || infos === null) return [];
  if (!Array.isArray(infos)) throw new ReconcileResponseError("workspace_rails_infos must be an array");
  return infos.map((raw: unknown, i) => {
    const at = `workspace_rails_infos[${i}]`;
    if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new ReconcileResponseError(`${at} must be an object`);
    const r = raw as Record<string, unknown>;
    const name = optionalString(r.name, `${at}.name`);
    if (name === "") throw new ReconcileResponseError(`${at}.name is required`);
    const namespace = optionalString(r.namespace, `${at}.namespace`);
    if (!DNS_LABEL.test(namespace)) throw new ReconcileResponseError(`${at}.namespace must be a DNS label, got ${JSON.stringify(namespace.slice(0, 80))}`);
    return {
      name,
      namespace,
      deployment_resource_version: optionalString(r.deployment_resource_version, `${at}.deployment_resource_version`),
      actual_state: optionalString(r.actual_state, `${at}.actual_state`),
      desired_state: optionalString(r.desired_state, `${at}.desired_state`),
      config_to_apply: optionalString(r.config_to_apply, `${at}.config_to_apply`),
    };
  });
}
