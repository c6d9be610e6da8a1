import type { RemoteDevelopmentCF } from "../../../gen/gitlab/agent/agentcfg/agentcfg_pb.js";

/** GitLab agentk's defaults (gla: remote_development/agent/module.go). */
export const DEFAULT_PARTIAL_SYNC_INTERVAL_MS = 10_000;
export const DEFAULT_FULL_SYNC_INTERVAL_MS = 3_600_000;

/** What the agent's loop reads of `remote_development` (dns_zone and the rest are the platform's). */
export interface RemoteDevelopmentLoopSettings {
  enabled: boolean;
  partialSyncIntervalMs: number;
  fullSyncIntervalMs: number;
}

const durationMs = (d: { seconds: bigint; nanos: number } | undefined, fallback: number) => {
  const ms = d === undefined ? 0 : Number(d.seconds) * 1000 + Math.floor(d.nanos / 1e6);
  // GitLab refuses intervals <= 0 when the configuration is pushed; an unset one takes the default.
  return ms > 0 ? ms : fallback;
};

export function remoteDevelopmentLoopSettings(config: RemoteDevelopmentCF | undefined): RemoteDevelopmentLoopSettings {
  return {
    enabled: config?.enabled ?? false,
    partialSyncIntervalMs: durationMs(config?.partialSyncInterval, DEFAULT_PARTIAL_SYNC_INTERVAL_MS),
    fullSyncIntervalMs: durationMs(config?.fullSyncInterval, DEFAULT_FULL_SYNC_INTERVAL_MS),
  };
}
