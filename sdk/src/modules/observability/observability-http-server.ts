import http from "node:http";
import https from "node:https";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";
import { applyHttp1Limits, resolveListenerLimits, type ListenerLimits, type ResolvedListenerLimits } from "../../transport/listener-limits.js";
import { listen } from "../../util/listen.js";

/** KAS's observability server's defaults of the limits every listener has (no HTTP/2 here). */
export const OBSERVABILITY_LIMITS = {
  maxConnections: 100,
  maxConcurrentStreams: 0,
  headersTimeoutMs: 20_000,
  idleTimeoutMs: 5_000,
} as const;

/** How long `/metrics` may take to gather, in ms (GitLab's 15 s). */
const METRICS_TIMEOUT_MS = 15_000;

/**
 * Options of {@link createObservabilityServer}. Limits default to `defaultLimits`, else
 * {@link OBSERVABILITY_LIMITS}: at most 100 connections, 20 000 ms for a request head, idle
 * keep-alive connections closed after 5 000 ms. `maxConcurrentStreams` does not apply (HTTP/1.1 only).
 */
export interface ObservabilityServerOptions extends ListenerLimits {
  /** Default "127.0.0.1". */
  host?: string;
  /** Default 8151 (GitLab KAS). 0 picks a free port. */
  port?: number;
  /** Serve HTTPS with this certificate and key (PEM) instead of HTTP. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  metrics: Registry;
  /** Whether the process should receive traffic: `/readiness` answers 500 with the reason when this returns one. */
  notReadyReason?(): string | undefined;
  /** The `Server` header of every response (GitLab sends the app name). Default "kasbridge". */
  serverName?: string;
  /** Limits for what the options leave unset. Default {@link OBSERVABILITY_LIMITS}. */
  defaultLimits?: ResolvedListenerLimits;
  /** Time to receive a whole request, in ms (GitLab's read timeout). Default Node's 300 000 ms. */
  requestTimeoutMs?: number;
}

export interface ObservabilityServer {
  readonly address: { host: string; port: number };
  readonly url: string;
  close(): Promise<void>;
}

/**
 * `/metrics` (Prometheus), `/liveness` and `/readiness`, as GitLab's KAS and agentk serve them: a
 * probe answers 200 with an empty body, or 500 with the reason; anything else is 404.
 */
export async function createObservabilityServer(options: ObservabilityServerOptions): Promise<ObservabilityServer> {
  const serverName = options.serverName ?? "kasbridge";
  const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
    res.setHeader("server", serverName);
    const path = (req.url ?? "/").split("?")[0];
    if (path === "/metrics") {
      serveMetrics(options.metrics, res);
    } else if (path === "/liveness") {
      res.writeHead(200).end();
    } else if (path === "/readiness") {
      const reason = options.notReadyReason?.();
      if (reason === undefined) res.writeHead(200).end();
      else res.writeHead(500, { "content-type": "text/plain; charset=utf-8" }).end(reason);
    } else {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found");
    }
  };
  const server = options.tls ? https.createServer({ cert: options.tls.cert, key: options.tls.key }, handler) : http.createServer(handler);
  applyHttp1Limits(server, resolveListenerLimits(options, options.defaultLimits ?? OBSERVABILITY_LIMITS), { requestTimeoutMs: options.requestTimeoutMs });
  await listen(server, options.port ?? 8151, options.host ?? "127.0.0.1");
  const address = server.address() as AddressInfo;
  const host = address.family === "IPv6" ? `[${address.address}]` : address.address;
  return {
    address: { host: address.address, port: address.port },
    url: `${options.tls ? "https" : "http"}://${host}:${address.port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function serveMetrics(metrics: Registry, res: http.ServerResponse): void {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`metrics took longer than ${METRICS_TIMEOUT_MS} ms`)), METRICS_TIMEOUT_MS);
  });
  Promise.race([metrics.metrics(), timeout])
    .then(
      (body) => {
        res.writeHead(200, { "content-type": metrics.contentType });
        res.end(body);
      },
      (error: unknown) => {
        res.writeHead(500, { "content-type": "text/plain" });
        res.end(String(error));
      },
    )
    .finally(() => clearTimeout(timer));
}
