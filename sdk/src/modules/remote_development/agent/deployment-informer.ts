import type { Logger } from "pino";
import type { KubeHttp } from "../../../agent/kube/kube-http.js";
import { ObjectCache } from "../../../agent/kube/object-cache.js";

/** The label GitLab puts on every workspace object: the agent's id. */
export const AGENT_ID_LABEL = "agent.gitlab.com/id";

/** A workspace's Deployment as the API server serves it. */
export interface WorkspaceDeployment {
  apiVersion?: string;
  kind?: string;
  metadata?: { name?: string; namespace?: string; resourceVersion?: string; managedFields?: unknown; [field: string]: unknown };
  [field: string]: unknown;
}

/**
 * The Deployments of this agent's workspaces, in every namespace (GitLab's dynamic informer on
 * apps/v1 deployments with `agent.gitlab.com/id=<agent id>`, re-listed every 5 minutes).
 */
export class DeploymentInformer {
  private readonly cache: ObjectCache<WorkspaceDeployment>;
  private readonly synced: Promise<void>;
  private readonly stop = new AbortController();
  private running: Promise<void> | undefined;

  constructor(kube: KubeHttp, agentId: bigint, logger: Logger, resyncMs = 300_000) {
    let onSynced!: () => void;
    this.synced = new Promise((resolve) => (onSynced = resolve));
    this.cache = new ObjectCache<WorkspaceDeployment>(kube, "/apis/apps/v1/deployments", { synced: onSynced }, logger, resyncMs, {
      labelSelector: `${AGENT_ID_LABEL}=${agentId}`,
    });
  }

  /**
   * Starts the list and watch; resolves once the first list is in. Rejects after `timeoutMs`
   * (no access to Deployments, API server down) or when `signal` aborts; the informer then stops.
   */
  async start(signal: AbortSignal, timeoutMs: number): Promise<void> {
    const runSignal = AbortSignal.any([signal, this.stop.signal]);
    this.running = this.cache.run(runSignal);
    let timer: NodeJS.Timeout | undefined;
    const failed = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`the Deployments of the workspaces could not be listed within ${timeoutMs} ms (see the watch failures logged)`)), timeoutMs);
      runSignal.addEventListener("abort", () => reject(new Error("stopped")), { once: true });
    });
    try {
      await Promise.race([this.synced, failed]);
    } catch (error) {
      await this.close();
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Each Deployment, as JSON the platform reads (`apiVersion` and `kind` set, as GitLab's informer objects have them). */
  list(): WorkspaceDeployment[] {
    return this.cache.list().map((d) => ({ ...d, apiVersion: "apps/v1", kind: "Deployment" }));
  }

  async close(): Promise<void> {
    this.stop.abort();
    await this.running;
  }
}
