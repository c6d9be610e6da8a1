import { setMaxListeners } from "node:events";
import { Code, ConnectError } from "@connectrpc/connect";
import type { ConnectRouter } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import pino, { type Logger } from "pino";
import { Registry } from "prom-client";
import { AgentRegistrar } from "../gen/gitlab/agent/agent_registrar/rpc/rpc_pb.js";
import { ReverseTunnel } from "../gen/gitlab/agent/reverse_tunnel/rpc/rpc_pb.js";
import type { PlatformClient } from "../platform/platform-client.js";
import { createAgentApiListener, type AgentApiListener, type AgentApiListenerOptions } from "../transport/agent-api-listener.js";
import { InMemoryTunnelRegistry, type TunnelRegistry } from "../tunnel/server/tunnel-registry.js";
import { authenticateBeforeBody } from "./agent-auth-gate.js";
import { AgentAuthenticator } from "./agent-authenticator.js";
import { agentRegistrarService } from "./agent-registrar-service.js";
import { AgentTracker, defaultKasInstanceId } from "./agent-tracker.js";
import { connectionContextValues } from "./connection-context.js";
import { listenGateway, type GatewayListener, type GatewayListenOptions } from "./gateway-listener.js";
import { internalApiAuthorizer, privateApiAuthorizer } from "./internal-api-auth.js";
import { createKasMetrics } from "./kas-metrics.js";
import { rawGrpcMethods, type RawGrpcMethod } from "./raw-grpc.js";
import { rawReverseTunnelStreams, reverseTunnelConnectPath, reverseTunnelService } from "./reverse-tunnel-service.js";
import { createTunnelGateway } from "./tunnel-gateway.js";
import { streamWindowBytes, widenConnectionWindow } from "../util/http2-windows.js";
import { hostPort } from "../util/host-port.js";

/** What a feature module gets to register its agent-facing services. */
export interface KasModuleContext {
  auth: AgentAuthenticator;
  tracker: AgentTracker;
  registry: TunnelRegistry;
  logger: Logger;
  shutdownSignal: AbortSignal;
  /** Largest gRPC message KAS accepts or sends (KasServerOptions.maxMessageBytes). */
  maxMessageBytes?: number;
}

/** A feature channel's server half: registers services on the agent API. */
export interface KasModule {
  name: string;
  /** Registers the module's agent-facing services (connect-es: every protocol). */
  registerAgentServices(router: ConnectRouter, ctx: KasModuleContext): void;
  /**
   * Methods served on the raw HTTP/2 stream ahead of connect-es (see `rawServerStreamingMethod`),
   * for long-lived streams every agent holds. They take gRPC over HTTP/2 only; the same methods
   * registered by `registerAgentServices` serve everything else. Called once, after
   * `registerAgentServices`; embedders that only mount the router never call it.
   */
  rawAgentMethods?(ctx: KasModuleContext): RawGrpcMethod[];
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
  internalApi: Partial<GatewayListenOptions> & {
    /** Default 8153. */
    port?: number;
    /** HS256 secret of the platform's JWTs (aud gitlab-kas; any issuer, as GitLab). */
    jwtSecret: Uint8Array;
  };
  /**
   * KAS's private API (GitLab port 8155), where other KAS replicas call agents connected to this
   * one: the same gateway as the internal API, authenticated with JWTs signed by the private API
   * secret (iss and aud gitlab-kas). It only routes to this replica's own tunnels. Off when unset.
   */
  privateApi?: Partial<GatewayListenOptions> & {
    /** Default 8155. */
    port?: number;
    /** HS256 secret shared by the KAS replicas (not the platform's). */
    jwtSecret: Uint8Array;
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
  /** Where the private (kas-to-kas) API listens, when enabled. */
  readonly privateApiAddress?: { host: string; port: number };
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
  const moduleContext: KasModuleContext = { auth, tracker, registry, logger, shutdownSignal: shutdown.signal, maxMessageBytes };

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
  const agentApi = await createAgentApiListener({
    ...options.agentApi,
    http2Settings: { initialWindowSize: streamWindowBytes, ...options.agentApi?.http2Settings },
    // Strangers' bodies are not read: the token is checked from the headers first.
    handler: authenticateBeforeBody(connectHandler, auth, logger.child({ component: "agent-api" })),
    // gRPC tunnels (and modules' long-lived streams) over HTTP/2 bypass connect-es and Node's
    // compatibility layer: an idle stream then costs about a KiB of heap, not tens.
    streamHandler: rawGrpcMethods([
      { path: reverseTunnelConnectPath, handle: rawReverseTunnelStreams(tunnelDeps) },
      ...(options.modules ?? []).flatMap((module) => module.rawAgentMethods?.(moduleContext) ?? []),
    ]),
    logger: logger.child({ component: "agent-api" }),
  });
  agentApi.onSessionOpen((session) => widenConnectionWindow(session));

  const gatewayFor = (authorize: (headers: Headers) => Promise<void>) =>
    createTunnelGateway({
      registry,
      logger,
      maxMessageBytes,
      authorize,
      onCallEnd: ({ code, durationMs }) => kasMetrics.callEnded(code, durationMs),
    });
  const gateways: GatewayListener[] = [];
  let internalApi: GatewayListener;
  let privateApi: GatewayListener | undefined;
  try {
    internalApi = await listenGateway(
      "internal API",
      { ...options.internalApi, port: options.internalApi.port ?? 8153 },
      gatewayFor(internalApiAuthorizer(options.internalApi.jwtSecret)),
      logger,
    );
    gateways.push(internalApi);
    if (options.privateApi) {
      privateApi = await listenGateway(
        "private API",
        { ...options.privateApi, port: options.privateApi.port ?? 8155 },
        gatewayFor(privateApiAuthorizer(options.privateApi.jwtSecret)),
        logger,
      );
      gateways.push(privateApi);
    }
  } catch (error) {
    await Promise.all([agentApi.close(0), ...gateways.map((g) => g.close())]);
    throw error;
  }
  logger.info(
    {
      agentApi: agentApi.url(),
      internalApi: hostPort(internalApi.address.host, internalApi.address.port),
      privateApi: privateApi && hostPort(privateApi.address.host, privateApi.address.port),
      kasInstance,
    },
    "KAS listening",
  );

  let closing: Promise<void> | undefined;
  return {
    agentApi,
    internalApiAddress: internalApi.address,
    privateApiAddress: privateApi?.address,
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
        const gatewaysClosed = Promise.all(gateways.map((g) => g.close()));
        // Calls in flight through tunnels get the grace period to finish.
        const deadline = Date.now() + graceMs;
        while (registry.stats().busyTunnels > 0 && Date.now() < deadline) {
          await new Promise((resolve) => setTimeout(resolve, 25));
        }
        shutdown.abort();
        registry.closeTunnels(() => true, shuttingDown);
        for (const g of gateways) g.destroySessions();
        await Promise.all([agentApiClosed, gatewaysClosed]);
        auth.close();
      })();
      return closing;
    },
  };
}
