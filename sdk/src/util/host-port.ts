/** `host:port` for a URL or a log line, an IPv6 address in brackets (`[::1]:8150`). */
export function hostPort(host: string, port: number): string {
  return host.includes(":") && !host.startsWith("[") ? `[${host}]:${port}` : `${host}:${port}`;
}

/**
 * A listen address: "host:port", "[::1]:port" or ":port" (all interfaces, 0.0.0.0); port 0 picks
 * a free port. Undefined when `value` is none of these.
 */
export function parseListenAddress(value: string): { host: string; port: number } | undefined {
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(value.trim());
  const port = match ? Number(match[3]) : NaN;
  if (!match || port > 65535) return undefined;
  return { host: match[1] ?? (match[2] || "0.0.0.0"), port };
}
