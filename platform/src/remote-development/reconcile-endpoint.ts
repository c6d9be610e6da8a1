/**
 * The platform half of the agent's remote_development module: `POST
 * /api/v4/internal/kubernetes/modules/remote_development/reconcile` (reached through KAS's
 * gitlab_access), with GitLab's request validation. Success is 201 with `workspace_rails_infos`;
 * a refused request is `{error: <message>}` with 400.
 */
import type { AgentModuleHandler, AgentModuleResponse, ModuleRequestService } from "../module-requests/module-requests.js";
import { ERROR_TYPES, TERMINATION_PROGRESS, type WorkspaceAgentInfo } from "./states.js";
import type { ReconcileRequest, WorkspaceService } from "./workspaces.js";

export const REMOTE_DEVELOPMENT_MODULE = "remote_development";

class RequestError extends Error {}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === "object" && v !== null && !Array.isArray(v);

/** Checks a reconcile request body as GitLab's params validator does; throws RequestError naming the field. */
export function parseReconcileRequest(body: Uint8Array): ReconcileRequest {
  let json: unknown;
  try {
    json = JSON.parse(Buffer.from(body).toString("utf8"));
  } catch {
    throw new RequestError("the request body is not JSON");
  }
  if (!isObject(json)) throw new RequestError("the request body must be a JSON object");
  const { update_type: updateType, workspace_agent_infos: infos } = json;
  if (updateType !== "full" && updateType !== "partial") throw new RequestError('update_type is required and must be "full" or "partial"');
  if (!Array.isArray(infos)) throw new RequestError("workspace_agent_infos is required and must be an array");
  infos.forEach((info: unknown, i) => {
    const at = `workspace_agent_infos[${i}]`;
    if (!isObject(info)) throw new RequestError(`${at} must be an object`);
    if (typeof info.name !== "string" || info.name === "") throw new RequestError(`${at}.name is required`);
    if (typeof info.namespace !== "string") throw new RequestError(`${at}.namespace is required`);
    if (info.termination_progress !== undefined && !(TERMINATION_PROGRESS as readonly unknown[]).includes(info.termination_progress)) {
      throw new RequestError(`${at}.termination_progress must be one of ${TERMINATION_PROGRESS.join(", ")}`);
    }
    if (info.latest_k8s_deployment_info !== undefined && !isObject(info.latest_k8s_deployment_info)) {
      throw new RequestError(`${at}.latest_k8s_deployment_info must be an object`);
    }
    const details = info.error_details;
    if (details !== undefined) {
      if (!isObject(details) || !(ERROR_TYPES as readonly unknown[]).includes(details.error_type)) {
        throw new RequestError(`${at}.error_details.error_type is required and must be one of ${ERROR_TYPES.join(", ")}`);
      }
    }
  });
  return { update_type: updateType, workspace_agent_infos: infos as WorkspaceAgentInfo[] };
}

/** The reconcile handler for `moduleRequests.register(REMOTE_DEVELOPMENT_MODULE, …)`. */
export function reconcileHandler(workspaces: WorkspaceService): AgentModuleHandler {
  return async (request): Promise<AgentModuleResponse> => {
    if (request.path !== "/reconcile") return { status: 404, json: { message: "404 Not Found" } };
    if (request.method !== "POST") return { status: 405, json: { message: "405 Method Not Allowed" } };
    let parsed: ReconcileRequest;
    try {
      parsed = parseReconcileRequest(request.body);
    } catch (err) {
      if (err instanceof RequestError) return { status: 400, json: { error: err.message } };
      throw err;
    }
    return { status: 201, json: { workspace_rails_infos: await workspaces.reconcile(request.agent.agent.id, parsed) } };
  };
}

/** Registers the reconcile endpoint; returns the function that removes it. */
export function registerRemoteDevelopmentModule(moduleRequests: ModuleRequestService, workspaces: WorkspaceService): () => void {
  return moduleRequests.register(REMOTE_DEVELOPMENT_MODULE, reconcileHandler(workspaces));
}
