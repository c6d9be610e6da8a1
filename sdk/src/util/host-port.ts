/** `host:port` for a URL or a log line, an IPv6 address in brackets (`[::1]:8150`). */
export function hostPort(host: string, port: number): string {
  return host.includes(":") && !host.startsWith("[") ? `[${host}]:${port}` : `${host}:${port}`;
}
