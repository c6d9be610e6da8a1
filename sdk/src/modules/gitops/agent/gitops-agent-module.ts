import { Counter, Histogram, type Registry } from "prom-client";
import type { AgentModule } from "../../../agent/agent-module.js";
import { configuredAgentModule } from "../../../agent/agent-configuration-source.js";
import type { KubeHttp } from "../../../agent/kube/kube-http.js";
import { ResourceMapper } from "../../../agent/kube/resource-mapper.js";
import { manifestProjects, settingsKey } from "./manifest-project.js";
import { ManifestWorker, type ManifestWorkerOptions } from "./manifest-worker.js";

export interface GitopsAgentModuleOptions {
  /** The cluster, with the agent's credentials. */
  kube: KubeHttp;
  /** Registry for the module's metrics (sync duration, failures). Default: none. */
  metrics?: Registry;
  /** See ManifestWorkerOptions. */
  reapplyIntervalMs?: number;
  retry?: ManifestWorkerOptions["retry"];
}

/**
 * Agent half of GitLab's built-in GitOps (`gitops.manifest_projects`, module `gitops-manifest`):
 * one worker per configured manifest project, started, restarted and stopped as the agent's
 * configuration changes. Like GitLab's, it runs on the leader of the agent's pods only.
 */
export function gitopsAgentModule(options: GitopsAgentModuleOptions): AgentModule {
  const metrics = options.metrics && {
    duration: new Histogram({
      name: "gitops_sync_duration_seconds",
      help: "Time to apply one manifest commit (prune and readiness wait included), by outcome",
      labelNames: ["outcome"] as const,
      buckets: [0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300],
      registers: [options.metrics],
    }),
    failures: new Counter({ name: "gitops_sync_failures_total", help: "Manifest syncs that failed", registers: [options.metrics] }),
  };
  return configuredAgentModule("gitops", ["gitops"], async (ctx, configuration) => {
    const mapper = new ResourceMapper(options.kube);
    const workers = new Map<string, { key: string; stop: AbortController; done: Promise<void> }>();
    const running = new Set<Promise<void>>();
    const update = (projects: ReturnType<typeof manifestProjects>, agentId: bigint) => {
      const wanted = new Map(projects.map((p) => [p.project, p]));
      for (const [project, w] of workers) {
        const next = wanted.get(project);
        if (next && settingsKey(next) === w.key) continue;
        w.stop.abort();
        workers.delete(project);
      }
      for (const [project, settings] of wanted) {
        if (workers.has(project)) continue;
        const stop = new AbortController();
        const worker = new ManifestWorker({
          settings,
          agentId,
          kube: options.kube,
          mapper,
          transport: ctx.transport,
          logger: ctx.logger.child({ project }),
          reapplyIntervalMs: options.reapplyIntervalMs,
          retry: options.retry,
          onSync(_commit, outcome, durationMs) {
            metrics?.duration.observe({ outcome: outcome.error === undefined ? "success" : "failure" }, durationMs / 1000);
            if (outcome.error !== undefined) metrics?.failures.inc();
          },
        });
        const done = worker.run(AbortSignal.any([ctx.shutdownSignal, stop.signal])).catch((err: unknown) => {
          ctx.logger.error({ err, project }, "manifest project worker failed");
        });
        running.add(done);
        void done.finally(() => running.delete(done));
        workers.set(project, { key: settingsKey(settings), stop, done });
        ctx.logger.info({ project, ref: settings.ref.case ?? "default branch" }, "synchronizing manifest project");
      }
    };
    configuration.watch(({ config }) => update(manifestProjects(config), config.agentId), ctx.shutdownSignal);
    await new Promise<void>((resolve) => {
      if (ctx.shutdownSignal.aborted) resolve();
      ctx.shutdownSignal.addEventListener("abort", () => resolve(), { once: true });
    });
    await Promise.all([...running]);
  }, { leaderOnly: true });
}
