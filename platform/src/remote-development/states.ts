/**
 * Workspace states as GitLab's remote development names them, and how the actual state follows
 * from what the agent reports (the workspace Deployment's conditions, termination progress, apply
 * errors).
 */

export const WorkspaceState = {
  CreationRequested: "CreationRequested",
  Starting: "Starting",
  RestartRequested: "RestartRequested",
  Running: "Running",
  Stopping: "Stopping",
  Stopped: "Stopped",
  Terminating: "Terminating",
  Terminated: "Terminated",
  Failed: "Failed",
  Error: "Error",
  Unknown: "Unknown",
} as const;
export type WorkspaceState = (typeof WorkspaceState)[keyof typeof WorkspaceState];

/** What a user may ask a workspace to become. */
export const DESIRED_STATES: readonly WorkspaceState[] = ["Running", "RestartRequested", "Stopped", "Terminated"];

export const TERMINATION_PROGRESS = ["Terminating", "Terminated"] as const;
export type TerminationProgress = (typeof TERMINATION_PROGRESS)[number];

export const ERROR_TYPES = ["applier", "kubernetes"] as const;

/** One workspace as the agent reports it in a reconcile request. */
export interface WorkspaceAgentInfo {
  name: string;
  namespace: string;
  /** The whole Deployment as JSON; absent when the agent has none (or it did not change). */
  latest_k8s_deployment_info?: DeploymentInfo;
  termination_progress?: TerminationProgress;
  error_details?: { error_type: string; error_message?: string };
}

/** The parts of a Deployment the state computation reads. */
export interface DeploymentInfo {
  metadata?: { resourceVersion?: string };
  spec?: { replicas?: number };
  status?: {
    availableReplicas?: number;
    unavailableReplicas?: number;
    conditions?: Array<{ type?: string; reason?: string }>;
  };
}

/** Progressing reasons of a rollout still under way. */
const ROLLING_OUT = new Set(["NewReplicaSetCreated", "FoundNewReplicaSet", "ReplicaSetUpdated"]);

/** The actual state GitLab derives from one agent info. */
export function actualStateOf(info: WorkspaceAgentInfo): WorkspaceState {
  if (info.termination_progress === "Terminated") return "Terminated";
  if (info.error_details) return "Error";
  if (info.termination_progress === "Terminating") return "Terminating";
  const deployment = info.latest_k8s_deployment_info;
  if (!deployment) return "Unknown";
  const conditions = deployment.status?.conditions ?? [];
  const progressing = conditions.find((c) => c.type === "Progressing")?.reason;
  const available = conditions.find((c) => c.type === "Available")?.reason;
  const replicas = deployment.spec?.replicas ?? 1; // the API server defaults an absent count to 1
  const availableReplicas = deployment.status?.availableReplicas ?? 0;
  const unavailableReplicas = deployment.status?.unavailableReplicas ?? 0;
  if (progressing === "ProgressDeadlineExceeded") return "Failed";
  if (progressing !== undefined && ROLLING_OUT.has(progressing)) {
    if (replicas === 0) return "Stopping";
    if (replicas === 1) return "Starting";
    return "Unknown";
  }
  if (progressing === "NewReplicaSetAvailable") {
    if (available === "MinimumReplicasAvailable" && replicas === 0 && availableReplicas === 0) return "Stopped";
    if (replicas === availableReplicas && unavailableReplicas === 0) return "Running";
    if (replicas === 0 && availableReplicas === 1) return "Stopping";
    if (replicas === 1 && availableReplicas === 0) return "Starting";
  }
  return "Unknown";
}
