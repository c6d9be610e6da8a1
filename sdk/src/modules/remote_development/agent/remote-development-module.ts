/**
 * The agent half of GitLab's remote development (`remote_development`, gla:
 * internal/module/remote_development/agent): on the leader pod only, a reconcile loop with the
 * platform through gitlab_access: it reports the workspaces' Deployments, termination progress and
 * apply errors, and applies what the platform answers (namespaces, `config_to_apply` with
 * inventories, namespace deletion for terminated workspaces). The loop starts, stops and restarts
 * as the agent's `remote_development` configuration changes.
 */
import type { Registry } from "prom-client";
import type { AgentModule, AgentModuleContext } from "../../../agent/agent-module.js";
import { configuredAgentModule, type AgentConfigurationSource } from "../../../agent/agent-configuration-source.js";
import type { KubeHttp } from "../../../agent/kube/kube-http.js";
import { ResourceMapper } from "../../../agent/kube/resource-mapper.js";
import { gitlabAccessClient } from "../../gitlab_access/agent/gitlab-access-client.js";
import { DeploymentInformer } from "./deployment-informer.js";
import { createRemoteDevelopmentMetrics } from "./remote-development-metrics.js";
import { remoteDevelopmentLoopSettings, type RemoteDevelopmentLoopSettings } from "./remote-development-settings.js";
import { runSyncLoop } from "./sync-loop.js";
import { WorkspaceApplier } from "./workspace-applier.js";
import { WorkspaceReconciler } from "./workspace-reconciler.js";

/** GitLab's module name, also the platform path segment. */
export const REMOTE_DEVELOPMENT_MODULE = "remote_development";

export interface RemoteDevelopmentAgentModuleOptions {
  /** The cluster, with the agent's credentials (the RBAC it needs: docs/workspaces.md). */
  kube: KubeHttp;
  /** Registry for the module's metrics (`agentk_remote_development_*`). Default: the agent's (`ctx.metrics`). */
  metrics?: Registry;
  /** Longest time one reconcile request to the platform may take. Default 60 000 ms. */
  requestTimeoutMs?: number;
  /** Longest time one request to the API server may take. Default 30 000 ms. */
  kubeRequestTimeoutMs?: number;
  /** Longest wait for the first list of the workspaces' Deployments at a full sync. Default 60 000 ms. */
  informerSyncTimeoutMs?: number;
  /** How often the Deployment informer lists again. Default 300 000 ms (GitLab). */
  informerResyncMs?: number;
  /** Largest platform answer read. Default 16 MiB. */
  maxResponseBytes?: number;
}

export function remoteDevelopmentAgentModule(options: RemoteDevelopmentAgentModuleOptions): AgentModule {
  return configuredAgentModule(REMOTE_DEVELOPMENT_MODULE, ["remote_development"], (ctx, configuration) => lead(ctx, configuration, options), { leaderOnly: true });
}

/** The leader's work for one term: one sync loop at a time, following the configuration. */
async function lead(ctx: AgentModuleContext, configuration: AgentConfigurationSource, options: RemoteDevelopmentAgentModuleOptions): Promise<void> {
  const metrics = createRemoteDevelopmentMetrics(options.metrics ?? ctx.metrics);
  const client = gitlabAccessClient(ctx.transport, REMOTE_DEVELOPMENT_MODULE, { maxResponseBytes: options.maxResponseBytes });
  const mapper = new ResourceMapper(options.kube);
  const applier = new WorkspaceApplier({
    kube: options.kube,
    mapper,
    requestTimeoutMs: options.kubeRequestTimeoutMs ?? 30_000,
    agentNamespace: ctx.agentMeta.podNamespace || undefined,
  });
  let current: { key: string; stop: AbortController; done: Promise<void> } | undefined;

  const start = (settings: RemoteDevelopmentLoopSettings, agentId: bigint) => {
    const key = JSON.stringify({ ...settings, agentId: String(agentId) });
    if (current?.key === key) return;
    current?.stop.abort();
    const previous = current?.done;
    const stop = new AbortController();
    const signal = AbortSignal.any([ctx.shutdownSignal, stop.signal]);
    const logger = ctx.logger.child({ agentId: String(agentId) });
    const done = (async () => {
      // One loop at a time: the previous one has closed its informer before this one starts.
      await previous;
      if (signal.aborted) return;
      if (!settings.enabled || agentId <= 0n) {
        logger.info("remote development is not enabled");
        return;
      }
      logger.info({ partialSyncIntervalMs: settings.partialSyncIntervalMs, fullSyncIntervalMs: settings.fullSyncIntervalMs }, "remote development: reconciling workspaces");
      await runSyncLoop(
        {
          settings,
          logger,
          newReconciler: async (s) => {
            const informer = new DeploymentInformer(options.kube, agentId, logger, options.informerResyncMs);
            await informer.start(s, options.informerSyncTimeoutMs ?? 60_000);
            return new WorkspaceReconciler({ informer, applier, client, logger, metrics, requestTimeoutMs: options.requestTimeoutMs ?? 60_000 });
          },
        },
        signal,
      );
    })().catch((error: unknown) => logger.error({ err: error }, "remote development loop failed"));
    current = { key, stop, done };
  };

  configuration.watch(({ config }) => start(remoteDevelopmentLoopSettings(config.remoteDevelopment), config.agentId), ctx.shutdownSignal);
  await new Promise<void>((resolve) => {
    if (ctx.shutdownSignal.aborted) return resolve();
    ctx.shutdownSignal.addEventListener("abort", () => resolve(), { once: true });
  });
  current?.stop.abort();
  await current?.done;
}
