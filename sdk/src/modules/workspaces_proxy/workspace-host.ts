/** A workspace host: `<port>-<workspace name>.<dns zone>` (GitLab's host template `{{.port}}-<ws>.<dns_zone>`). */
export interface WorkspaceHost {
  port: number;
  workspaceName: string;
  dnsZone: string;
}

/**
 * Parses a request's host as a workspace host: lower-cased, an optional `:port` suffix ignored.
 * Undefined when it is not one (no port prefix, a port out of range, a name that is no DNS label).
 */
export function parseWorkspaceHost(host: string): WorkspaceHost | undefined {
  const m = /^([1-9][0-9]{0,4})-([a-z0-9][a-z0-9-]{0,62})\.([a-z0-9](?:[a-z0-9.-]{0,251}[a-z0-9])?)$/.exec(hostName(host));
  if (!m) return undefined;
  const port = Number(m[1]);
  return port <= 65535 ? { port, workspaceName: m[2]!, dnsZone: m[3]! } : undefined;
}

/** The host without a `:port` suffix, lower-cased: what workspace tokens are bound to. */
export function hostName(host: string): string {
  return host.toLowerCase().replace(/:\d+$/, "");
}
