/**
 * GitLab's remote development worker (gla: remote_development/agent/worker.go): a full sync at
 * once and every `fullSyncIntervalMs` (a fresh reconciler: new informer, empty trackers), partial
 * syncs every `partialSyncIntervalMs` in between; each timer restarts after its run ends, so a
 * slow cycle is never followed at once by the next.
 */
import type { Logger } from "pino";
import { sleep } from "../../../util/backoff.js";
import { safeTimeoutMs } from "../../../util/timers.js";
import type { RemoteDevelopmentLoopSettings } from "./remote-development-settings.js";
import type { WorkspaceReconciler } from "./workspace-reconciler.js";

export interface SyncLoopOptions {
  settings: RemoteDevelopmentLoopSettings;
  /** A fresh reconciler, its informer synced; rejects when the cluster cannot be listed. */
  newReconciler(signal: AbortSignal): Promise<WorkspaceReconciler>;
  logger: Logger;
}

/** Runs until `signal` aborts; the reconciler in use is closed before it resolves. */
export async function runSyncLoop(options: SyncLoopOptions, signal: AbortSignal): Promise<void> {
  const { settings, logger } = options;
  let reconciler: WorkspaceReconciler | undefined;
  let nextFull = Date.now();
  let nextPartial = Date.now() + settings.partialSyncIntervalMs;
  const cycle = async (r: WorkspaceReconciler) => {
    const updateType = r.nextUpdateType;
    try {
      await r.run(signal);
    } catch (error) {
      if (!signal.aborted) logger.warn({ err: (error as Error).message, updateType }, "remote development reconcile failed; retrying at the next sync");
    }
  };
  try {
    while (!signal.aborted) {
      const wait = Math.min(nextFull, nextPartial) - Date.now();
      if (wait > 0) {
        await sleep(safeTimeoutMs(wait), signal);
        continue;
      }
      if (nextFull <= Date.now()) {
        logger.info("remote development: full sync");
        await reconciler?.close();
        reconciler = undefined;
        try {
          reconciler = await options.newReconciler(signal);
        } catch (error) {
          if (signal.aborted) break;
          // Try again at the next partial tick rather than in an hour.
          logger.warn({ err: (error as Error).message }, "remote development: cannot start the reconciler");
          nextFull = Date.now() + Math.min(settings.partialSyncIntervalMs, settings.fullSyncIntervalMs);
          continue;
        }
        await cycle(reconciler);
        nextFull = Date.now() + settings.fullSyncIntervalMs;
      } else {
        if (reconciler) await cycle(reconciler);
        nextPartial = Date.now() + settings.partialSyncIntervalMs;
      }
    }
  } finally {
    await reconciler?.close();
  }
}
