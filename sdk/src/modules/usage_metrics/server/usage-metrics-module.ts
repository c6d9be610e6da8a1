import type { KasModule, KasModuleContext } from "../../../kas/kas-module.js";

export interface UsageMetricsModuleOptions {
  /** How often the counters go to the platform, in ms (GitLab's `observability.usage_reporting_period`). Default 60 000; 0 sends nothing. */
  periodMs?: number;
  /** How long the final send at shutdown may take, in ms. Default 5 000 (GitLab's). */
  finalFlushTimeoutMs?: number;
}

/**
 * GitLab's usage_metrics module: every `periodMs` sends what the other modules counted
 * (`KasModuleContext.usage`) to the platform (`PlatformClient.sendUsageMetrics`, GitLab's
 * `POST /api/v4/internal/kubernetes/usage_metrics`), as deltas, and once more at shutdown. A
 * failed send keeps the counts for the next one.
 */
export function usageMetricsServerModule(options: UsageMetricsModuleOptions = {}): KasModule {
  const periodMs = options.periodMs ?? 60_000;
  const finalFlushTimeoutMs = options.finalFlushTimeoutMs ?? 5_000;
  let ctx: KasModuleContext | undefined;
  let timer: NodeJS.Timeout | undefined;
  let sending: Promise<void> = Promise.resolve();

  async function send(signal: AbortSignal): Promise<void> {
    const c = ctx;
    const payload = c?.usage.pending();
    if (!c?.platform.sendUsageMetrics || !payload) return;
    try {
      await c.platform.sendUsageMetrics(payload, signal);
      c.usage.subtract(payload);
      c.logger.debug({ counters: payload.counters, uniqueCounters: Object.keys(payload.unique_counters ?? {}) }, "sent usage metrics");
    } catch (err) {
      c.logger.warn({ err: (err as Error).message }, "cannot send usage metrics; they stay for the next send");
    }
  }

  /** One send at a time: a slow platform delays the next period rather than doubling the counts. */
  function sendOnce(signal: AbortSignal): Promise<void> {
    sending = sending.then(() => send(signal));
    return sending;
  }

  return {
    name: "usage_metrics",
    async start(context) {
      ctx = context;
      if (periodMs <= 0 || !context.platform.sendUsageMetrics) return;
      const tick = () => {
        void sendOnce(AbortSignal.timeout(Math.max(periodMs, 1_000))).finally(() => {
          if (timer) timer = setTimeout(tick, periodMs);
        });
      };
      timer = setTimeout(tick, periodMs);
    },
    async close() {
      const wasRunning = timer !== undefined;
      clearTimeout(timer);
      timer = undefined;
      if (wasRunning) await sendOnce(AbortSignal.timeout(finalFlushTimeoutMs));
    },
  };
}
