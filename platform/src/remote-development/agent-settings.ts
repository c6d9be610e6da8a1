import type { ConfigurationFile } from "@kasbridge/sdk/gen/gitlab/agent/agentcfg/agentcfg_pb";

/** An agent's `remote_development` configuration with GitLab's defaults filled in. */
export interface RemoteDevelopmentSettings {
  enabled: boolean;
  dnsZone: string;
  /** Default 10 s. */
  partialSyncIntervalS: number;
  /** Default 3600 s. */
  fullSyncIntervalS: number;
  /** Namespace of gitlab-workspaces-proxy; default "gitlab-workspaces". */
  proxyNamespace: string;
  /** Default true (GitLab generates the NetworkPolicy unless told not to). */
  networkPolicyEnabled: boolean;
}

export const DEFAULT_PARTIAL_SYNC_INTERVAL_S = 10;
export const DEFAULT_FULL_SYNC_INTERVAL_S = 3600;
export const DEFAULT_WORKSPACES_PROXY_NAMESPACE = "gitlab-workspaces";

export function remoteDevelopmentSettings(config: ConfigurationFile | undefined): RemoteDevelopmentSettings {
  const rd = config?.remoteDevelopment;
  const seconds = (d: { seconds: bigint } | undefined, fallback: number) => (d && d.seconds > 0n ? Number(d.seconds) : fallback);
  return {
    enabled: rd?.enabled ?? false,
    dnsZone: rd?.dnsZone ?? "",
    partialSyncIntervalS: seconds(rd?.partialSyncInterval, DEFAULT_PARTIAL_SYNC_INTERVAL_S),
    fullSyncIntervalS: seconds(rd?.fullSyncInterval, DEFAULT_FULL_SYNC_INTERVAL_S),
    proxyNamespace: rd?.gitlabWorkspacesProxy?.namespace || DEFAULT_WORKSPACES_PROXY_NAMESPACE,
    networkPolicyEnabled: rd?.networkPolicy?.enabled ?? true,
  };
}
