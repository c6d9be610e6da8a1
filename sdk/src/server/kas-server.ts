import { setMaxListeners } from "node:events";
import http2 from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import type { AddressInfo } from "node:net";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import pino, { type Logger } from "pino";
import { Registry } from "prom-client";
import { AgentRegistrar } from "../gen/gitlab/agent/agent_registrar/rpc/rpc_pb.js";
import { ReverseTunnel } from "../gen/gitlab/agent/reverse_tunnel/rpc/rpc_pb.js";
import type { PlatformClient } from "../platform/platform-client.js";
import { createAgentApiListener, type AgentApiListener, type AgentApiListenerOptions } from "../transport/agent-api-listener.js";
import { InMemoryTunnelRegistry, type TunnelRegistry } from "../tunnel/server/tunnel-registry.js";
import { AgentAuthenticator } from "./agent-authenticator.js";
import { agentRegistrarService } from "./agent-registrar-service.js";
import { AgentTracker, defaultKasInstanceId } from "./agent-tracker.js";
import { connectionContextValues } from "./connection-context.js";
import { internalApiAuthorizer } from "./internal-api-auth.js";
import { createKasMetrics } from "./kas-metrics.js";
import { reverseTunnelService, withRawReverseTunnel } from "./reverse-tunnel-service.js";
import { createTunnelGateway } from "./tunnel-gateway.js";
import { streamWindowBytes, widenConnectionWindow } from "../util/http2-windows.js";

/** What a feature module gets to register its agent-facing services. */
export interface KasModuleContext {
  auth: AgentAuthenticator;
  tracker: AgentTracker;
  registry: TunnelRegistry;
  logger: Logger;
  shutdownSignal: AbortSignal;
}

/** A feature channel's server half: registers services on the agent API. */
export interface KasModule {
  name: string;
  registerAgentServices(router: ConnectRouter, ctx: KasModuleContext): void;
}

export interface KasServerOptions {
  /** How KAS reaches the platform (agent_info, revocations). */
  platform: PlatformClient;
  logger?: Logger;
  /** Where idle tunnels are found. Default: in-memory (one KAS). */
  registry?: TunnelRegistry;
  /** The agent API listener (GitLab port 8150): host, port, TLS, HTTP/2 settings. */
  agentApi?: Omit<AgentApiListenerOptions, "handler" | "logger">;
  /** KAS's internal gRPC API (GitLab port 8153), where the platform calls agents through tunnels. */
  internalApi: {
    /** Default "127.0.0.1". */
    host?: string;
    /** Default 8153. */
    port?: number;
    /** HS256 secret of the platform's JWTs (iss gitlab, aud gitlab-kas). */
    jwtSecret: Uint8Array;
    /** Serve TLS (HTTP/2 with ALPN h2) instead of cleartext h2c. */
    tls?: { cert: string | Buffer; key: string | Buffer };
  };
  /** Largest gRPC message through a tunnel, either way. Default 16 MiB; larger: RESOURCE_EXHAUSTED. */
  maxMessageBytes?: number;
  /** Identity of this KAS process in connection listings. Default: host-pid-random. */
  kasInstance?: string;
  /** Prometheus registry for KAS's metrics. Default: a new one. */
  metrics?: Registry;
  /** How long agent_info answers are cached. Default 60 000 ms (revocations evict at once). */
  agentInfoCacheTtlMs?: number;
  /** Feature modules (configuration, gitops, ...) with their agent-facing services. */
  modules?: KasModule[];
}

export interface KasServer {
  readonly agentApi: AgentApiListener;
  readonly internalApiAddress: { host: string; port: number };
  readonly tracker: AgentTracker;
  readonly registry: TunnelRegistry;
  readonly auth: AgentAuthenticator;
  readonly metrics: Registry;
  readonly kasInstance: string;
  /** Stops accepting agents and calls, lets calls finish for up to graceMs, closes everything. */
  close(graceMs?: number): Promise<void>;
}

/** Assembles KAS: the agent API (tunnels, registration, modules) and the internal API gateway. */
export async function createKasServer(options: KasServerOptions): Promise<KasServer> {
  const logger = options.logger ?? pino({ name: "kas" });
  const registry = options.registry ?? new InMemoryTunnelRegistry();
  const metrics = options.metrics ?? new Registry();
  const kasInstance = options.kasInstance ?? defaultKasInstanceId();
  const maxMessageBytes = options.maxMessageBytes ?? 16 * 1024 * 1024;
  const shutdown = new AbortController();
  // Every open stream listens on the shutdown signal; hundreds are normal.
  setMaxListeners(0, shutdown.signal);
  const auth = new AgentAuthenticator({ platform: options.platform, logger, cacheTtlMs: options.agentInfoCacheTtlMs });
  const tracker = new AgentTracker({ kasInstance });
  const kasMetrics = createKasMetrics(metrics, { tunnels: registry, tracker });
  const moduleContext: KasModuleContext = { auth, tracker, registry, logger, shutdownSignal: shutdown.signal };

  // Tunnel frames wrap a message with a few bytes of envelope.
  const tunnelDeps = { auth, registry, logger, shutdownSignal: shutdown.signal, maxMessageBytes: maxMessageBytes + 1024 };
  const connectHandler = connectNodeAdapter({
    readMaxBytes: maxMessageBytes + 1024,
    writeMaxBytes: maxMessageBytes + 1024,
    shutdownSignal: shutdown.signal,
    contextValues: connectionContextValues,
    routes(router) {
      router.service(ReverseTunnel, reverseTunnelService(tunnelDeps));
      router.service(AgentRegistrar, agentRegistrarService({ auth, tracker }));
      for (const module of options.modules ?? []) module.registerAgentServices(router, moduleContext);
    },
  });
  // gRPC tunnels over HTTP/2 bypass connect-es: an idle tunnel then costs a few KiB, not tens.
  const handler = withRawReverseTunnel(connectHandler, tunnelDeps);
  const agentApi = await createAgentApiListener({
    ...options.agentApi,
    http2Settings: { initialWindowSize: streamWindowBytes, ...options.agentApi?.http2Settings },
    handler,
    logger: logger.child({ component: "agent-api" }),
  });
  agentApi.onSessionOpen((session) => widenConnectionWindow(session));

  const gateway = createTunnelGateway({
    registry,
    logger,
    maxMessageBytes,
    authorize: internalApiAuthorizer(options.internalApi.jwtSecret),
    onCallEnd: ({ code, durationMs }) => kasMetrics.callEnded(code, durationMs),
  });
  const internalSettings = { initialWindowSize: streamWindowBytes };
  const internalServer = options.internalApi.tls
    ? http2.createSecureServer({ ...options.internalApi.tls, allowHTTP1: false, settings: internalSettings })
    : http2.createServer({ settings: internalSettings });
  internalServer.on("stream", (stream, headers) => void gateway(stream, headers));
  internalServer.on("sessionError", (error) => logger.debug({ err: error }, "internal API session error"));
  try {
    await new Promise<void>((resolve, reject) => {
      internalServer.once("error", reject);
      internalServer.listen(options.internalApi.port ?? 8153, options.internalApi.host ?? "127.0.0.1", () => resolve());
    });
  } catch (error) {
    await agentApi.close(0);
    throw error;
  }
  const internalAddress = internalServer.address() as AddressInfo;
  const internalSessions = new Set<http2.ServerHttp2Session>();
  internalServer.on("session", (session) => {
    widenConnectionWindow(session);
    internalSessions.add(session);
    session.once("close", () => internalSessions.delete(session));
  });
  logger.info(
    { agentApi: agentApi.url(), internalApi: `${internalAddress.address}:${internalAddress.port}`, kasInstance },
    "KAS listening",
  );

  let closing: Promise<void> | undefined;
  return {
    agentApi,
    internalApiAddress: { host: internalAddress.address, port: internalAddress.port },
    tracker,
    registry,
    auth,
    metrics,
    kasInstance,
    close(graceMs = 10_000) {
      closing ??= (async () => {
        const shuttingDown = new ConnectError("KAS is shutting down", Code.Unavailable);
        // Idle tunnels go at once; new streams and connections are refused (GOAWAY) from here.
        registry.closeTunnels((tunnel) => !tunnel.isTaken, shuttingDown);
        const agentApiClosed = agentApi.close(graceMs);
        for (const session of internalSessions) session.close();
        const internalClosed = new Promise<void>((resolve) => internalServer.close(() => resolve()));
        // Calls in flight through tunnels get the grace period to finish.
        const deadline = Date.now() + graceMs;
        while (registry.stats().busyTunnels > 0 && Date.now() < deadline) {
          await new Promise((resolve) => setTimeout(resolve, 25));
        }
        shutdown.abort();
        registry.closeTunnels(() => true, shuttingDown);
        for (const session of internalSessions) session.destroy();
        await Promise.all([agentApiClosed, internalClosed]);
        auth.close();
      })();
      return closing;
    },
  };
}
