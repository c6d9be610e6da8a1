import { Counter, Histogram, type Registry } from "prom-client";

/** A metric of `registry` by name, created once (several agents may share one registry, as in tests). */
function once<T>(registry: Registry, name: string, make: () => T): T {
  return (registry.getSingleMetric(name) as T | undefined) ?? make();
}

/** The module's metrics, registered on the agent's registry (`agentk_remote_development_*`). */
export function createRemoteDevelopmentMetrics(registry: Registry) {
  const reconciles = once(
    registry,
    "agentk_remote_development_reconciles_total",
    () =>
      new Counter({
        name: "agentk_remote_development_reconciles_total",
        help: "Reconcile cycles with the platform, by update type (full, partial) and result (success, failure).",
        labelNames: ["update_type", "result"] as const,
        registers: [registry],
      }),
  );
  const duration = once(
    registry,
    "agentk_remote_development_reconcile_duration_seconds",
    () =>
      new Histogram({
        name: "agentk_remote_development_reconcile_duration_seconds",
        help: "Time of one reconcile cycle: the request to the platform and applying its answer.",
        labelNames: ["update_type"] as const,
        buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
        registers: [registry],
      }),
  );
  const applies = once(
    registry,
    "agentk_remote_development_workspace_applies_total",
    () =>
      new Counter({
        name: "agentk_remote_development_workspace_applies_total",
        help: "Workspace configurations applied (config_to_apply), by result (success, failure).",
        labelNames: ["result"] as const,
        registers: [registry],
      }),
  );
  const terminations = once(
    registry,
    "agentk_remote_development_namespace_deletions_total",
    () =>
      new Counter({
        name: "agentk_remote_development_namespace_deletions_total",
        help: "Workspace namespaces deleted (desired state Terminated).",
        registers: [registry],
      }),
  );
  return {
    cycle(updateType: string, ok: boolean, seconds: number) {
      reconciles.inc({ update_type: updateType, result: ok ? "success" : "failure" });
      duration.observe({ update_type: updateType }, seconds);
    },
    applied(ok: boolean) {
      applies.inc({ result: ok ? "success" : "failure" });
    },
    namespaceDeleted() {
      terminations.inc();
    },
  };
}

export type RemoteDevelopmentMetrics = ReturnType<typeof createRemoteDevelopmentMetrics>;
