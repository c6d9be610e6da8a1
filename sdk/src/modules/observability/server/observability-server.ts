import http from "node:http";
import type { AddressInfo } from "node:net";
import type { Registry } from "prom-client";
import type { KasModule } from "../../../kas/kas-module.js";
import { applyHttp1Limits, resolveListenerLimits, type ListenerLimits } from "../../../transport/listener-limits.js";
import { hostPort } from "../../../util/host-port.js";
import { listen } from "../../../util/listen.js";

/** The observability server's defaults of the limits every listener has (no HTTP/2 here). */
export const OBSERVABILITY_LIMITS = {
  maxConnections: 100,
  maxConcurrentStreams: 0,
  headersTimeoutMs: 20_000,
  idleTimeoutMs: 5_000,
} as const;

/**
 * Options of {@link createObservabilityServer}. Limits default to {@link OBSERVABILITY_LIMITS}: at
 * most 100 connections, 20 000 ms for a request head, idle keep-alive connections closed after
 * 5 000 ms. `maxConcurrentStreams` does not apply (HTTP/1.1 only).
 */
export interface ObservabilityServerOptions extends ListenerLimits {
  /** Default "127.0.0.1". */
  host?: string;
  /** Default 8151 (GitLab KAS). 0 picks a free port. */
  port?: number;
  metrics: Registry;
  /** Whether the process should receive traffic; `/readiness` answers 503 when false. */
  ready(): boolean;
}

export interface ObservabilityServer {
  readonly address: { host: string; port: number };
  close(): Promise<void>;
}

/** `/metrics` (Prometheus), `/liveness` and `/readiness`, as GitLab KAS serves them. */
export async function createObservabilityServer(options: ObservabilityServerOptions): Promise<ObservabilityServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? "/").split("?")[0];
    if (path === "/metrics") {
      options.metrics.metrics().then(
        (body) => {
          res.writeHead(200, { "content-type": options.metrics.contentType });
          res.end(body);
        },
        (error: unknown) => {
          res.writeHead(500, { "content-type": "text/plain" });
          res.end(String(error));
        },
      );
    } else if (path === "/liveness") {
      res.writeHead(200, { "content-type": "text/plain" }).end("ok");
    } else if (path === "/readiness") {
      const ready = options.ready();
      res.writeHead(ready ? 200 : 503, { "content-type": "text/plain" }).end(ready ? "ok" : "not ready");
    } else {
      res.writeHead(404, { "content-type": "text/plain" }).end("not found");
    }
  });
  applyHttp1Limits(server, resolveListenerLimits(options, OBSERVABILITY_LIMITS));
  await listen(server, options.port ?? 8151, options.host ?? "127.0.0.1");
  const address = server.address() as AddressInfo;
  return {
    address: { host: address.address, port: address.port },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

export interface ObservabilityServerModuleOptions extends Omit<ObservabilityServerOptions, "metrics" | "ready"> {
  /** Whether KAS should receive traffic (`/readiness`). Default: always. */
  ready?(): boolean;
}

/**
 * The KAS half of observability: `/metrics` (KAS's registry), `/liveness` and `/readiness` on
 * their own listener (GitLab port 8151), owned by the module.
 */
export function observabilityServerModule(options: ObservabilityServerModuleOptions = {}): KasModule {
  let server: ObservabilityServer | undefined;
  return {
    name: "observability",
    async start(ctx) {
      server = await createObservabilityServer({ ...options, metrics: ctx.metrics, ready: options.ready ?? (() => true) });
    },
    addresses(): Record<string, string> {
      return server ? { observability: `http://${hostPort(server.address.host, server.address.port)}` } : {};
    },
    async close() {
      await server?.close();
    },
  };
}
