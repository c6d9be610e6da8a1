import { fromBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "pino";
import { GatewayKasResponseSchema, type GatewayKasResponse } from "../gen/gitlab/agent/kas/kasapp_pb.js";
import { TUNNEL_ENVELOPE_BYTES } from "../grpc/limits.js";
import { GrpcClientStream } from "../transport/grpc-client-stream.js";
import type { AgentCalls } from "../tunnel/server/agent-calls.js";
import { routingAgentIdHeader } from "../tunnel/server/gateway-request.js";
import type { TunnelCall, TunnelCallEvent } from "../tunnel/server/server-tunnel.js";
import type { TunnelRegistry } from "../tunnel/server/tunnel-registry.js";
import { errorFromStatus } from "../tunnel/rpc-status.js";
import { metaToHeaders, metaToNodeHeaders, type MetaMap } from "../util/metadata.js";
import type { PeerSessions } from "./peer-sessions.js";

export interface RoutingAgentCallsOptions {
  /** This replica's tunnels, tried first. */
  registry: TunnelRegistry;
  /** Which other replicas hold tunnels of an agent (Redis). */
  directory: { kasUrls(agentId: number): Promise<string[]> };
  /** Connections to the other replicas' private APIs. */
  peers: PeerSessions;
  logger: Logger;
  /** Largest message either way. */
  maxMessageBytes: number;
  /** First pause between lookups of an agent's replicas while a call waits. Default 50 ms. */
  pollMs?: number;
  /** Longest pause between lookups (the pause doubles up to it). Default 1 000 ms. */
  maxPollMs?: number;
  /** Observes where each call was routed and how long finding its tunnel took. */
  onRouted?(info: { agentId: number; via: "local" | "peer"; waitMs: number }): void;
}

/**
 * AgentCalls across replicas, as GitLab's routing KAS: a call takes an idle tunnel of this replica
 * when there is one; otherwise it waits for one here and, at the same time, asks every replica that
 * Redis lists for the agent through their private APIs (GitLab's gateway sequence:
 * `no_tunnel` / `tunnel_ready`, then `StartStreaming` to the first replica ready, the others told
 * to let go by the end of our request). New replicas found by polling Redis are asked as they
 * appear; a replica that fails is asked again after a pause while Redis still lists it. The call
 * then streams both ways through that replica, with the same events, backpressure, cancellation
 * and errors as a local one. Calls arriving on the private API are never routed again (that
 * gateway uses the registry directly), so there are no loops.
 */
export class RoutingAgentCalls implements AgentCalls {
  /**
   * The replicas Redis listed for each agent lately (GitLab's routing cache, 5 minutes): asked at
   * once, while the lookup in Redis runs, so a forwarded call does not wait for Redis first.
   */
  private readonly recentUrls = new Map<number, { urls: string[]; at: number }>();

  constructor(private readonly options: RoutingAgentCallsOptions) {}

  /** The replicas lately listed for `agentId` (empty when unknown or older than 5 minutes). */
  cachedUrls(agentId: number): string[] {
    const entry = this.recentUrls.get(agentId);
    if (!entry || Date.now() - entry.at > routeCacheMs) return [];
    return entry.urls;
  }

  /** Remembers what Redis listed for `agentId`. */
  rememberUrls(agentId: number, urls: string[]): void {
    this.recentUrls.delete(agentId);
    if (urls.length === 0) return;
    if (this.recentUrls.size >= routeCacheSize) this.recentUrls.delete(this.recentUrls.keys().next().value as number);
    this.recentUrls.set(agentId, { urls, at: Date.now() });
  }

  start(agentId: number, method: string, meta: MetaMap, signal: AbortSignal): Promise<TunnelCall> {
    if (!signal.aborted) {
      const tunnel = this.options.registry.tryAcquire(agentId, method);
      if (tunnel) {
        this.options.onRouted?.({ agentId, via: "local", waitMs: 0 });
        return Promise.resolve(tunnel.start(method, meta));
      }
    }
    return new TunnelFind(this.options, this, agentId, method, meta, signal).run();
  }
}

const routeCacheMs = 5 * 60_000;
const routeCacheSize = 10_000;

type GatewayStream = GrpcClientStream<Uint8Array, GatewayKasResponse>;

/** Asking one replica for a tunnel. */
interface Attempt {
  stream?: GatewayStream;
  retryTimer?: NodeJS.Timeout;
  retryDelayMs: number;
}

/** How long an abandoned gateway stream may take to end before it is reset. */
const abandonTimeoutMs = 10_000;

/** One call's search for a tunnel, here and on the replicas Redis lists for the agent. */
class TunnelFind {
  private done = false;
  private readonly attempts = new Map<string, Attempt>();
  private knownUrls: string[] = [];
  private readonly localAbort = new AbortController();
  private pollTimer: NodeJS.Timeout | undefined;
  private pollDelayMs: number;
  private readonly started = Date.now();
  private resolve!: (call: TunnelCall) => void;
  private reject!: (error: ConnectError) => void;
  private readonly onAbort = () => this.abort();
  private localFailure: ConnectError | undefined;

  constructor(
    private readonly options: RoutingAgentCallsOptions,
    private readonly routes: RoutingAgentCalls,
    private readonly agentId: number,
    private readonly method: string,
    private readonly meta: MetaMap,
    private readonly signal: AbortSignal,
  ) {
    this.pollDelayMs = options.pollMs ?? 50;
  }

  run(): Promise<TunnelCall> {
    return new Promise<TunnelCall>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
      this.waitLocally();
      if (this.signal.aborted) return this.abort();
      this.signal.addEventListener("abort", this.onAbort, { once: true });
      this.knownUrls = this.routes.cachedUrls(this.agentId);
      for (const url of this.knownUrls) this.ask(url);
      void this.lookUp();
    });
  }

  private waitLocally(): void {
    const { registry } = this.options;
    registry.acquire(this.agentId, this.method, this.localAbort.signal).then(
      (tunnel) => {
        if (this.done) return registry.release(tunnel);
        this.win("local", () => tunnel.start(this.method, this.meta));
      },
      (error: unknown) => (this.localFailure = ConnectError.from(error)),
    );
  }

  /** Looks the agent's replicas up in Redis, asks the new ones, and looks again after a pause. */
  private async lookUp(): Promise<void> {
    this.pollTimer = undefined;
    try {
      this.knownUrls = await this.options.directory.kasUrls(this.agentId);
      this.routes.rememberUrls(this.agentId, this.knownUrls);
    } catch {
      // Redis is down (logged once by its availability): only this replica's tunnels can serve.
    }
    if (this.done) return;
    for (const url of this.knownUrls) if (!this.attempts.has(url)) this.ask(url);
    this.pollTimer = setTimeout(() => void this.lookUp(), this.pollDelayMs);
    this.pollDelayMs = Math.min(this.pollDelayMs * 2, this.options.maxPollMs ?? 1_000);
  }

  private ask(url: string, attempt: Attempt = { retryDelayMs: 100 }): void {
    this.attempts.set(url, attempt);
    attempt.retryTimer = undefined;
    const stream = openGatewayStream(this.options.peers, url, this.agentId, this.method, this.meta, this.options.maxMessageBytes);
    attempt.stream = stream;
    void this.awaitReady(url, attempt, stream);
  }

  private async awaitReady(url: string, attempt: Attempt, stream: GatewayStream): Promise<void> {
    let failure: unknown;
    try {
      if (await tunnelReady(stream)) {
        if (this.done) return abandon(stream);
        attempt.stream = undefined;
        return this.win("peer", () => startStreaming(stream, this.agentId));
      }
    } catch (error) {
      failure = error;
    }
    if (attempt.stream === stream) attempt.stream = undefined;
    if (this.done) return;
    this.options.logger.debug({ agentId: this.agentId, kasUrl: url, err: failure instanceof Error ? failure.message : "ended without tunnel_ready" }, "routing: replica did not offer a tunnel");
    if (!this.knownUrls.includes(url)) {
      this.attempts.delete(url);
      return;
    }
    attempt.retryTimer = setTimeout(() => this.ask(url, attempt), attempt.retryDelayMs);
    attempt.retryDelayMs = Math.min(attempt.retryDelayMs * 2, 1_000);
  }

  private win(via: "local" | "peer", start: () => TunnelCall): void {
    if (this.done) return;
    this.finish();
    this.options.onRouted?.({ agentId: this.agentId, via, waitMs: Date.now() - this.started });
    try {
      this.resolve(start());
    } catch (error) {
      this.reject(ConnectError.from(error));
    }
  }

  /** The caller gave up (its deadline, cancellation or KAS's tunnel-find timeout). */
  private abort(): void {
    if (this.done) return;
    this.finish();
    const error =
      this.knownUrls.length > 0
        ? new ConnectError(`no idle tunnel of agent ${this.agentId} serving ${this.method} became free in time`, Code.Unavailable)
        : (this.localFailure ?? new ConnectError(`agent ${this.agentId} is not connected`, Code.Unavailable));
    this.reject(error);
  }

  private finish(): void {
    this.done = true;
    this.signal.removeEventListener("abort", this.onAbort);
    clearTimeout(this.pollTimer);
    this.localAbort.abort();
    for (const attempt of this.attempts.values()) {
      clearTimeout(attempt.retryTimer);
      if (attempt.stream) abandon(attempt.stream);
    }
    this.attempts.clear();
  }
}

/**
 * Tells a gateway we go elsewhere, as GitLab's router does: our request ends before
 * StartStreaming, so it puts the tunnel it holds back. A reset only if it does not end in time.
 */
function abandon(stream: GatewayStream): void {
  stream.closeSend();
  const timer = setTimeout(() => stream.cancel(new ConnectError("abandoned", Code.Canceled)), abandonTimeoutMs);
  void (async () => {
    try {
      while (!(await stream.next()).done);
    } catch {
      // Ended either way.
    } finally {
      clearTimeout(timer);
    }
  })();
}

/** A call to `method` of `agentId` on the replica at `url`'s private API (GitLab's routing stream). */
export function openGatewayStream(peers: PeerSessions, url: string, agentId: number, method: string, meta: MetaMap, maxMessageBytes: number): GatewayStream {
  const headers = {
    ...metaToNodeHeaders(meta),
    ...GrpcClientStream.requestHeaders({}),
    [routingAgentIdHeader]: String(agentId),
  };
  return new GrpcClientStream(peers.request(url, method, headers), {
    encode: (bytes) => bytes,
    decode: (bytes) => fromBinary(GatewayKasResponseSchema, bytes),
    readMaxBytes: maxMessageBytes + TUNNEL_ENVELOPE_BYTES,
    writeMaxBytes: maxMessageBytes,
  });
}

/**
 * Waits for the gateway's `tunnel_ready` (past any `no_tunnel`): true then, false when it ended the
 * call without one; throws on its error status or anything else before.
 */
async function tunnelReady(stream: GatewayStream): Promise<boolean> {
  for (;;) {
    const next = await stream.next();
    if (next.done) return false;
    const msg = next.value.msg;
    if (msg.case === "tunnelReady") return true;
    if (msg.case !== "noTunnel") throw new ConnectError(`unexpected ${msg.case ?? "empty message"} before tunnel_ready`, Code.Internal);
  }
}

/** Sends StartStreaming (an empty message) and returns the call running through the gateway's tunnel. */
function startStreaming(stream: GatewayStream, agentId: number): TunnelCall {
  void stream.send(new Uint8Array(0)).catch(() => {});
  return {
    events: remoteEvents(stream, agentId),
    send: (data) => stream.send(data),
    closeSend: () => {
      stream.closeSend();
      return Promise.resolve();
    },
    cancel: (reason) => stream.cancel(reason ?? new ConnectError("call cancelled by the caller", Code.Canceled)),
  };
}

/**
 * Calls `method` of `agentId` through the replica at `url` (its private API), waiting there for a
 * tunnel until `signal` aborts: e.g. to reach an agent through a known replica, or to check one.
 */
export async function callThroughReplica(
  peers: PeerSessions,
  url: string,
  agentId: number,
  method: string,
  meta: MetaMap,
  options: { maxMessageBytes: number; signal?: AbortSignal },
): Promise<TunnelCall> {
  const stream = openGatewayStream(peers, url, agentId, method, meta, options.maxMessageBytes);
  const onAbort = () => abandon(stream);
  options.signal?.addEventListener("abort", onAbort, { once: true });
  try {
    if (!(await tunnelReady(stream))) throw new ConnectError(`the replica at ${url} ended the call without a tunnel`, Code.Unavailable);
    options.signal?.throwIfAborted();
  } catch (error) {
    stream.cancel(ConnectError.from(error));
    throw ConnectError.from(error);
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
  }
  return startStreaming(stream, agentId);
}

/** The gateway's header, message*, trailer, error? as tunnel call events. */
async function* remoteEvents(stream: GatewayStream, agentId: number): AsyncGenerator<TunnelCallEvent> {
  // 0 expect header|error, 1 message|trailer, 2 error|end, 3 end
  let state = 0;
  let trailer: MetaMap = {};
  let error: ConnectError | undefined;
  for (;;) {
    const next = await stream.next();
    if (next.done) break;
    const msg = next.value.msg;
    if (msg.case === "header" && state === 0) {
      state = 1;
      yield { kind: "header", meta: msg.value.meta };
    } else if (msg.case === "message" && state === 1) {
      yield { kind: "message", data: msg.value.data };
    } else if (msg.case === "trailer" && state === 1) {
      state = 2;
      trailer = msg.value.meta;
    } else if (msg.case === "error" && (state === 0 || state === 2)) {
      state = 3;
      error = errorFromStatus(msg.value.status, metaToHeaders(trailer));
    } else {
      stream.cancel(new ConnectError("protocol violation", Code.Internal));
      throw new ConnectError(`routing protocol violation: unexpected ${msg.case ?? "empty message"} from the gateway KAS`, Code.Internal);
    }
  }
  if (state === 0 || state === 1) throw new ConnectError(`agent ${agentId}: the gateway KAS ended the call without a status`, Code.Unavailable);
  yield { kind: "end", trailer, error };
}
