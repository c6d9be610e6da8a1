import type { Logger } from "pino";
import type { AuditTrail } from "./audit-trail.js";

export interface AuditPruning {
  /** Stops the schedule; waits for a prune in progress. */
  stop(): Promise<void>;
}

/**
 * Deletes expired audit entries now and then every `everyMs` (default hourly), so that a quiet
 * instance (no new entries, hence no prune on write) does not keep them past the retention. The
 * caller owns the schedule and stops it before closing the store.
 */
export function startAuditPruning(audit: AuditTrail, options: { logger: Logger; everyMs?: number }): AuditPruning {
  const everyMs = options.everyMs ?? 60 * 60 * 1000;
  let running: Promise<void> = Promise.resolve();
  const pruneNow = () => {
    running = running.then(async () => {
      try {
        const deleted = await audit.prune();
        if (deleted > 0) options.logger.info({ deleted }, "pruned audit entries past their retention");
      } catch (err) {
        options.logger.warn({ err }, "cannot prune the audit trail; next attempt at the next period");
      }
    });
  };
  pruneNow();
  const timer = setInterval(pruneNow, everyMs);
  timer.unref();
  return {
    async stop() {
      clearInterval(timer);
      await running;
    },
  };
}
