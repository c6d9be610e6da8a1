import type { GitlabAccessClient } from "../../gitlab_access/agent/gitlab-access-client.js";
import { parseReconcileResponse, ReconcileResponseError, type ReconcileRequestBody, type WorkspaceRailsInfo } from "./reconcile-messages.js";

/** The reconcile request failed: no answer, or not the 201 GitLab's agentk requires. */
export class ReconcileRequestError extends Error {
  override readonly name = "ReconcileRequestError";
  constructor(
    message: string,
    /** The platform's HTTP status, when it answered. */
    readonly status?: number,
  ) {
    super(message);
  }
}

/**
 * Sends one reconcile request as GitLab's agentk does: `POST /reconcile` below the module's path
 * (KAS forwards it to `/api/v4/internal/kubernetes/modules/remote_development/reconcile` with the
 * agent's token and its JWT), `Content-Type: application/json`; only 201 is success.
 */
export async function reconcileRequest(
  client: GitlabAccessClient,
  body: ReconcileRequestBody,
  options: { signal: AbortSignal; timeoutMs: number },
): Promise<WorkspaceRailsInfo[]> {
  let res;
  try {
    res = await client.request({
      method: "POST",
      path: "/reconcile",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(body),
      signal: options.signal,
      timeoutMs: options.timeoutMs,
    });
  } catch (error) {
    options.signal.throwIfAborted();
    throw new ReconcileRequestError(`reconcile request failed: ${(error as Error).message}`);
  }
  if (res.status !== 201) {
    // The platform's error JSON ({"error": ...} or {"message": ...}) says why; never a secret.
    throw new ReconcileRequestError(`the platform answered ${res.statusLine || res.status} to the reconcile request: ${res.text().slice(0, 300)}`, res.status);
  }
  try {
    return parseReconcileResponse(res.text());
  } catch (error) {
    if (error instanceof ReconcileResponseError) throw new ReconcileRequestError(`invalid reconcile answer: ${error.message}`, res.status);
    throw error;
  }
}
