/**
 * One reconciler of GitLab's remote development loop (gla: remote_development/agent/reconciler.go):
 * it lives from one full sync to the next, with its own Deployment informer and trackers. Each
 * `run` reports what changed since the platform last saw it (Deployments of a new version,
 * termination progress, the last errors), posts that to the platform, and acts on the answer:
 * creates namespaces and applies `config_to_apply`, or deletes the namespace of a workspace whose
 * desired state is Terminated. Its first run is a full sync, the later ones are partial.
 */
import type { Logger } from "pino";
import { eachLimit } from "../../../util/each-limit.js";
import type { GitlabAccessClient } from "../../gitlab_access/agent/gitlab-access-client.js";
import type { DeploymentInformer } from "./deployment-informer.js";
import { reconcileRequest } from "./reconcile-client.js";
import type { UpdateType, WorkspaceAgentInfo, WorkspaceRailsInfo } from "./reconcile-messages.js";
import type { RemoteDevelopmentMetrics } from "./remote-development-metrics.js";
import type { WorkspaceApplier } from "./workspace-applier.js";
import { ErrorTracker, PersistedVersions, TerminationTracker, type TrackedError } from "./workspace-trackers.js";

/** Workspaces acted on at once after an answer. */
const CONCURRENCY = 4;

export interface WorkspaceReconcilerOptions {
  informer: DeploymentInformer;
  applier: WorkspaceApplier;
  client: GitlabAccessClient;
  logger: Logger;
  metrics: RemoteDevelopmentMetrics;
  /** Longest time the reconcile request may take. */
  requestTimeoutMs: number;
}

export class WorkspaceReconciler {
  private readonly persisted = new PersistedVersions();
  private readonly terminations = new TerminationTracker();
  private readonly errors = new ErrorTracker();
  private fullSyncDone = false;

  constructor(private readonly options: WorkspaceReconcilerOptions) {}

  /** The update type of the next run: full until one full sync succeeded. */
  get nextUpdateType(): UpdateType {
    return this.fullSyncDone ? "partial" : "full";
  }

  /** One cycle; rejects when the platform could not be asked (the next cycle tries again). */
  async run(signal: AbortSignal): Promise<void> {
    const { logger, metrics } = this.options;
    const updateType = this.nextUpdateType;
    const started = performance.now();
    let ok = false;
    try {
      const reported = this.errors.snapshot();
      const infos = await this.agentInfos(reported, signal);
      const answer = await reconcileRequest(this.options.client, { update_type: updateType, workspace_agent_infos: infos }, { signal, timeoutMs: this.options.requestTimeoutMs });
      logger.debug({ updateType, reported: infos.length, answered: answer.length }, "reconcile answered");
      const errorsByWorkspace = new Map(reported.map((e) => [`${e.namespace}/${e.name}`, e]));
      await eachLimit(answer, CONCURRENCY, (info) => this.act(info, errorsByWorkspace.get(`${info.namespace}/${info.name}`), signal));
      this.fullSyncDone = true;
      ok = true;
    } finally {
      if (!signal.aborted) metrics.cycle(updateType, ok, (performance.now() - started) / 1000);
    }
  }

  /** What this cycle reports (GitLab's generateWorkspaceAgentInfos). */
  private async agentInfos(reportedErrors: TrackedError[], signal: AbortSignal): Promise<WorkspaceAgentInfo[]> {
    const infos = new Map<string, WorkspaceAgentInfo>();
    const entry = (name: string, namespace: string) => {
      const k = `${namespace}/${name}`;
      let info = infos.get(k);
      if (!info) infos.set(k, (info = { name, namespace }));
      return info;
    };
    const deployments = this.options.informer.list();
    const inCluster = new Set<string>();
    for (const d of deployments) {
      const name = d.metadata?.name ?? "";
      const namespace = d.metadata?.namespace ?? "";
      inCluster.add(`${namespace}/${name}`);
      if (this.persisted.isPersisted(name, d.metadata?.resourceVersion)) continue;
      entry(name, namespace).latest_k8s_deployment_info = d;
    }
    for (const t of this.terminations.list()) {
      // Terminated once the Deployment is gone (GitLab) and, beyond GitLab, its namespace too.
      let terminating = inCluster.has(`${t.namespace}/${t.name}`);
      if (!terminating) terminating = await this.options.applier.namespaceExists(t.namespace, signal).catch(() => true);
      entry(t.name, t.namespace).termination_progress = terminating ? "Terminating" : "Terminated";
    }
    for (const e of reportedErrors) entry(e.name, e.namespace).error_details = { error_type: e.type, error_message: e.message };
    return [...infos.values()];
  }

  /** Acts on one workspace of the answer (GitLab's applyWorkspaceChanges). */
  private async act(info: WorkspaceRailsInfo, reportedError: TrackedError | undefined, signal: AbortSignal): Promise<void> {
    const { applier, logger, metrics } = this.options;
    const { name, namespace } = info;
    this.persisted.record(name, info.deployment_resource_version);
    // The platform answered about this workspace: it has seen the error reported.
    if (reportedError) this.errors.clearIfReported(reportedError);
    const log = logger.child({ workspace: name, namespace });
    try {
      if (info.desired_state === "Terminated") {
        if (info.actual_state === "Terminated") {
          this.terminations.delete(name, namespace);
          this.persisted.delete(name);
          return;
        }
        if (await applier.deleteNamespace(namespace, signal)) {
          this.terminations.set(name, namespace, "Terminating");
          log.info("workspace terminating: namespace deleted");
          metrics.namespaceDeleted();
        } else {
          this.terminations.set(name, namespace, "Terminated");
        }
        return;
      }
      if (!(await applier.namespaceExists(namespace, signal))) await applier.createNamespace(namespace, signal);
    } catch (error) {
      signal.throwIfAborted();
      const message = `${info.desired_state === "Terminated" ? "terminating" : "preparing"} namespace ${namespace}: ${(error as Error).message}`;
      log.warn({ err: message }, "workspace namespace failed");
      this.errors.record(name, namespace, "kubernetes", message);
      return;
    }
    if (info.config_to_apply === "") {
      this.errors.clear(name, namespace);
      return;
    }
    const failure = await applier.apply(info.config_to_apply, namespace, signal);
    metrics.applied(failure === undefined);
    if (failure === undefined) {
      this.errors.clear(name, namespace);
      log.info({ desiredState: info.desired_state }, "workspace config applied");
    } else {
      this.errors.record(name, namespace, "applier", failure);
      log.warn({ err: failure }, "workspace config not fully applied; reporting the error");
    }
  }

  async close(): Promise<void> {
    await this.options.informer.close();
  }
}
