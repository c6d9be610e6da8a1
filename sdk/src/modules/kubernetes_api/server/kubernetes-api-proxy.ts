/**
 * KAS's Kubernetes API proxy (GitLab port 8154): kubectl talks HTTP to KAS, KAS authenticates the
 * caller (CI job token or personal access token), decides the impersonation from the agent's
 * ci_access/user_access, and sends the request through one of the agent's tunnels as
 * `KubernetesApi/MakeRequest` frames; the agent forwards it to its cluster's API server.
 *
 * Streams both ways with backpressure (request body -> `data` frames, response body <- `data`
 * frames), never times out a running request (watches, `logs -f`), and carries protocol upgrades
 * (SPDY/3.1 and WebSocket: exec, attach, port-forward) as `upgradeData` frames after a 101. A
 * running request ends when its credential stops being valid (open-streams.ts). What the agent
 * answers is checked before it reaches the client: status code, header names and values (no line
 * breaks), hop-by-hop headers removed, a refused upgrade's body bounded.
 *
 * This file holds the listener and its lifecycle; the steps every request shares are in
 * proxy-requests.ts, plain requests in plain-request.ts, upgrades in upgrade-request.ts.
 */
import http, { type IncomingMessage } from "node:http";
import http2, { type SecureServerOptions } from "node:http2";
import type { AddressInfo, Socket } from "node:net";
import type { Duplex } from "node:stream";
import pino, { type Logger } from "pino";
import client, { Registry } from "prom-client";
import type { KasAuditLog } from "../../../kas/audit-log.js";
import type { UsageMetrics } from "../../../kas/usage-metrics.js";
import { Tracing } from "../../../tracing/tracing.js";
import type { PlatformClient } from "../../../platform-client/platform-client.js";
import type { AgentCalls } from "../../../tunnel/server/agent-calls.js";
import { hostPort } from "../../../util/host-port.js";
import { streamWindowBytes, widenConnectionWindow } from "../../../util/http2-windows.js";
import {
  applyHttp1Limits,
  http2SettingsWithLimits,
  resolveListenerLimits,
  superviseSessionWithLimits,
  type ListenerLimits,
} from "../../../transport/listener-limits.js";
import { resetStream } from "../../../transport/request-guard.js";
import { listen } from "../../../util/listen.js";
import { waitUntil } from "../../../util/timers.js";
import { OpenStreams } from "./open-streams.js";
import { handlePlainRequest } from "./plain-request.js";
import { ProxyAuthenticator } from "./proxy-auth.js";
import { ProxyRequests, type AnyRequest, type AnyResponse } from "./proxy-requests.js";
import { handleUpgradeRequest } from "./upgrade-request.js";

/** The proxy's defaults of the limits every listener has. */
export const K8S_PROXY_LIMITS = {
  maxConnections: 10_000,
  // kube-apiserver's own default (--http2-max-streams-per-connection): kubectl multiplexes watches.
  maxConcurrentStreams: 1_000,
  headersTimeoutMs: 20_000,
  idleTimeoutMs: 600_000,
} as const;

/**
 * Options of {@link createKubernetesApiProxy}. The limits ({@link ListenerLimits}) default to
 * {@link K8S_PROXY_LIMITS}: at most 10 000 connections and 1 000 concurrent HTTP/2 streams per
 * connection; 20 000 ms for a TLS handshake and a request head (HTTP/2: the first stream); a
 * connection with no request in progress closed after 600 000 ms (10 min). A request in progress
 * (a watch, `logs -f`, an exec) is never cut by them.
 */
export interface KubernetesApiProxyOptions extends ListenerLimits {
  /** How the proxy calls agents (KasServer.agentCalls). */
  agentCalls: AgentCalls;
  platform: PlatformClient;
  /** Default: silent. Audit lines are logged at info level. */
  logger?: Logger;
  /** Usage counters for the platform (KasModuleContext.usage); none when unset. */
  usage?: UsageMetrics;
  /** The audit trail (KasModuleContext.audit); none when unset. */
  audit?: KasAuditLog;
  /**
   * Spans of the requests and their tunnel calls (KasModuleContext.tracing), linked to the
   * client's `traceparent` and carried to the agent. Default: OpenTelemetry's global tracer
   * provider and propagator (no-ops unless an application registers some).
   */
  tracing?: Tracing;
  /** Default "127.0.0.1". */
  host?: string;
  /** Default 8154 (GitLab KAS's port); 0 picks a free port. */
  port?: number;
  /** With TLS the proxy speaks HTTP/2 and HTTP/1.1 (ALPN); without, HTTP/1.1. */
  tls?: Pick<SecureServerOptions, "cert" | "key" | "ca" | "pfx" | "passphrase">;
  /** Path prefix kubectl's server URL carries; stripped before forwarding. Default "/". */
  urlPathPrefix?: string;
  /** How long a successful job-token / PAT authorization is reused. Default 5 000 ms. */
  authCacheTtlMs?: number;
  /** How long a request waits for an idle tunnel of the agent before answering 503. Default 10 000 ms. */
  tunnelWaitMs?: number;
  /** Where `kas_k8s_proxy_requests_total` is registered. Default: a private registry. */
  metrics?: Registry;
  /** Largest request or response frame. Default 1 MiB (bodies are split into frames of at most this). */
  maxFrameBytes?: number;
  /**
   * How often the credential of each running request (watch, `logs -f`, exec, port-forward…) is
   * authorized again, as a backstop to the platform's revocation feed: a refusal or another
   * identity ends its requests. Default 60 000 ms; 0 turns it off.
   */
  reauthorizeIntervalMs?: number;
  /**
   * Largest body of an agent's answer refusing an upgrade (exec, attach, port-forward refused by
   * RBAC and the like: a Kubernetes Status), which the proxy holds to answer with its length.
   * Beyond it the client gets 502. Default 65 536 bytes.
   */
  maxUpgradeRefusalBytes?: number;
}

export interface KubernetesApiProxy {
  address: AddressInfo;
  /** "http://host:port/prefix" or "https://…": the server of generated kubeconfigs. */
  url: string;
  /** Stops accepting, lets requests in flight run up to `graceMs` (default 10 000), then ends them. */
  close(graceMs?: number): Promise<void>;
}

export async function createKubernetesApiProxy(options: KubernetesApiProxyOptions): Promise<KubernetesApiProxy> {
  const logger = options.logger ?? pino({ level: "silent" });
  const prefix = normalizePrefix(options.urlPathPrefix ?? "/");
  const auth = new ProxyAuthenticator({ platform: options.platform, cacheTtlMs: options.authCacheTtlMs });
  const openStreams = new OpenStreams({ auth, platform: options.platform, logger, reauthorizeIntervalMs: options.reauthorizeIntervalMs ?? 60_000 });
  const metricsRegistry = options.metrics ?? new Registry();
  const requestsTotal =
    (metricsRegistry.getSingleMetric("kas_k8s_proxy_requests_total") as client.Counter<"code"> | undefined) ??
    new client.Counter({
      name: "kas_k8s_proxy_requests_total",
      help: "Requests to the Kubernetes API proxy, by HTTP status code answered.",
      labelNames: ["code"] as const,
      registers: [metricsRegistry],
    });
  const proxy = new ProxyRequests({
    agentCalls: options.agentCalls,
    auth,
    openStreams,
    logger,
    requestsTotal,
    usage: options.usage,
    audit: options.audit,
    tracing: options.tracing ?? new Tracing(),
    prefix,
    tunnelWaitMs: options.tunnelWaitMs ?? 10_000,
    maxFrameBytes: options.maxFrameBytes ?? 1024 * 1024,
    maxUpgradeRefusalBytes: options.maxUpgradeRefusalBytes ?? 64 * 1024,
  });
  const sockets = new Set<Socket | Duplex>();

  // The handlers answer every failure they know of; these catch the ones they do not, on the one
  // request they happened to.
  const onRequest = (req: AnyRequest, res: AnyResponse) => {
    handlePlainRequest(proxy, req, res).catch((err: unknown) => {
      logger.warn({ err, method: req.method }, "k8s proxy: a request failed outside its handler");
      if ("stream" in res) resetStream(res.stream);
      else res.destroy();
    });
  };
  const limits = resolveListenerLimits(options, K8S_PROXY_LIMITS);
  const server = options.tls
    ? http2.createSecureServer(
        {
          ...options.tls,
          allowHTTP1: true,
          settings: http2SettingsWithLimits({ initialWindowSize: streamWindowBytes }, limits),
          handshakeTimeout: limits.headersTimeoutMs,
        },
        onRequest,
      )
    : http.createServer(onRequest);
  server.setTimeout(0);
  // HTTP/1.1 (with TLS or without): connections, request head and keep-alive timeouts; no
  // timeout for a whole request (an upload such as kubectl cp takes as long as it takes).
  applyHttp1Limits(server, limits, { requestTimeoutMs: 0 });
  if (options.tls) {
    server.on("session", (session: http2.ServerHttp2Session) => {
      // The connection window too (SETTINGS only cover streams): large uploads (kubectl apply/cp)
      // would otherwise move 64 KiB per round trip.
      widenConnectionWindow(session);
      superviseSessionWithLimits(session, limits);
    });
  }
  server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    sockets.add(socket);
    socket.once("close", () => sockets.delete(socket));
    handleUpgradeRequest(proxy, req, socket, head).catch((err: unknown) => {
      logger.warn({ err, method: req.method }, "k8s proxy: an upgrade failed outside its handler");
      socket.destroy();
    });
  });
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.setKeepAlive(true, 30_000);
    // Headers are flushed before the body: without this, Nagle + delayed ACK cost ~40 ms a request.
    socket.setNoDelay(true);
    socket.once("close", () => sockets.delete(socket));
  });
  if (options.tls) server.on("secureConnection", (socket: Socket) => sockets.add(socket));

  try {
    await listen(server, options.port ?? 8154, options.host ?? "127.0.0.1");
  } catch (e) {
    openStreams.close(); // stops watching the platform's feeds
    throw e;
  }
  const address = server.address() as AddressInfo;
  const url = `${options.tls ? "https" : "http"}://${hostPort(address.address, address.port)}${prefix === "/" ? "" : prefix.replace(/\/$/, "")}`;
  logger.info({ url }, "Kubernetes API proxy listening");

  let closing: Promise<void> | undefined;
  return {
    address,
    url,
    close(graceMs = 10_000) {
      closing ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        (server as http.Server).closeIdleConnections?.();
        await waitUntil(() => proxy.calls.size === 0, graceMs, 50);
        proxy.close();
        openStreams.close();
        for (const socket of sockets) socket.destroy();
        (server as http.Server).closeAllConnections?.();
        await closed;
      })();
      return closing;
    },
  };
}

function normalizePrefix(prefix: string): string {
  let p = prefix.startsWith("/") ? prefix : `/${prefix}`;
  if (!p.endsWith("/")) p += "/";
  return p;
}
