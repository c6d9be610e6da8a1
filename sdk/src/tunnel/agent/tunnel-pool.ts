import { setMaxListeners } from "node:events";
import { Code, ConnectError, type Transport } from "@connectrpc/connect";
import type { Logger } from "pino";
import type { ConnectRequest } from "../../gen/gitlab/agent/reverse_tunnel/rpc/rpc_pb.js";
import type { AgentDescriptor } from "../../gen/gitlab/agent/reverse_tunnel/info/info_pb.js";
import { Backoff, sleep, type BackoffOptions } from "../../util/backoff.js";
import type { Tracing } from "../../tracing/tracing.js";
import { AgentTunnel } from "./agent-tunnel.js";
import type { LocalServiceHost } from "./local-service-host.js";
import { connectTunnelStreams, type TunnelStreamOpener } from "./tunnel-stream.js";

export interface TunnelPoolOptions {
  /** Transport to KAS; tunnels are connect-es `ReverseTunnel/Connect` calls on it unless `openStream` is given. */
  transport: Transport;
  /**
   * Opens each tunnel's stream instead (e.g. {@link rawTunnelStreams}: raw HTTP/2 streams on the
   * agent transport's connection, much cheaper per tunnel). Default: a connect-es client on `transport`.
   */
  openStream?: TunnelStreamOpener;
  host: LocalServiceHost;
  logger: Logger;
  /** Logger for per-tunnel lines (a request taken), GitLab's `grpc_level`. Default `logger`. */
  grpcLogger?: Logger;
  /** Idle tunnels kept open, waiting for requests. Default 2 (GitLab agentk). */
  minIdleTunnels?: number;
  /** Tunnels opened at once when idle ones run short. Default 10 (GitLab agentk). */
  scaleUpStep?: number;
  /** Idle plus active tunnels at most. Default 500 (GitLab agentk). */
  maxTunnels?: number;
  /** An idle tunnel beyond `minIdleTunnels` closes after this long. Default 60 000 ms. */
  maxIdleTimeMs?: number;
  /** Reconnect backoff after a failed stream. Default 1 s -> 20 s, factor 1.6, with jitter. */
  backoff?: BackoffOptions;
  /** Called once per backoff step when tunnels fail (e.g. to re-register after a reconnect). */
  onFailure?: (error: ConnectError) => void;
  /** Called when a tunnel proves KAS accepts the agent (it served a call or stayed open 5 s). */
  onHealthy?: () => void;
  /** Called when a call through a tunnel ends, with its gRPC status code (0: OK). */
  onCallEnd?: (methodName: string, code: Code | 0) => void;
  /** Spans of the calls tunnels serve (children of KAS's, from RequestInfo's `traceparent`). Default: none. */
  tracing?: Tracing;
  /** The module serving a method ("/pkg.Service/Method"), for the spans' `gitlab.agent.module`. */
  moduleOf?: (methodName: string) => string;
}

/**
 * Keeps a pool of idle reverse-tunnel streams open to KAS. A tunnel that takes a request is
 * replaced at once so idle capacity stays up; failures back off exponentially for the whole pool
 * (one failing KAS must not be hammered by every worker); stop() drains in-flight requests.
 */
export class TunnelPool {
  private readonly openStream: TunnelStreamOpener;
  private descriptor: { of: AgentDescriptor; message: ConnectRequest } | undefined;
  private readonly minIdle: number;
  private readonly scaleUpStep: number;
  private readonly maxTunnels: number;
  private readonly maxIdleTimeMs: number;
  private readonly backoff: Backoff;
  private readonly tunnels = new Set<AgentTunnel>();
  private readonly workers = new Set<Promise<void>>();
  private readonly stopping = new AbortController();
  private idle = 0;
  private retryAt = 0;
  private lastErrorLog = "";
  private started = false;

  constructor(private readonly options: TunnelPoolOptions) {
    this.openStream = options.openStream ?? connectTunnelStreams(options.transport);
    this.minIdle = options.minIdleTunnels ?? 2;
    this.scaleUpStep = options.scaleUpStep ?? 10;
    this.maxTunnels = options.maxTunnels ?? 500;
    this.maxIdleTimeMs = options.maxIdleTimeMs ?? 60_000;
    this.backoff = new Backoff(options.backoff);
    // Every worker waiting out a backoff listens on this signal.
    setMaxListeners(0, this.stopping.signal);
  }

  /** Counts for metrics and tests. */
  stats(): { idle: number; active: number; workers: number } {
    return { idle: this.idle, active: this.tunnels.size - this.idle, workers: this.workers.size };
  }

  start(): void {
    if (this.started) return;
    this.started = true;
    this.spawn(this.minIdle);
  }

  /**
   * Stops taking requests: idle tunnels close at once, in-flight requests get `graceMs` to finish
   * and are then cancelled. Resolves when every stream has ended.
   */
  async stop(graceMs = 10_000): Promise<void> {
    this.stopping.abort();
    for (const tunnel of this.tunnels) tunnel.abortIfIdle();
    const drained = Promise.all(this.workers);
    const timer = setTimeout(() => {
      for (const tunnel of this.tunnels) tunnel.cancelActive();
    }, graceMs);
    try {
      await drained;
    } finally {
      clearTimeout(timer);
    }
  }

  private spawn(count: number): void {
    const room = this.maxTunnels - this.workers.size;
    for (let i = 0; i < Math.min(count, room); i++) {
      const worker: Promise<void> = this.work().finally(() => this.workers.delete(worker));
      this.workers.add(worker);
    }
  }

  /** One worker: opens tunnels one after another until the pool shrinks or stops. */
  private async work(): Promise<void> {
    while (!this.stopping.signal.aborted) {
      await this.waitForRetry();
      if (this.stopping.signal.aborted) return;
      let idleSince = 0;
      let idleTimer: NodeJS.Timeout | undefined;
      let countedIdle = false;
      let shrunk = false;
      const tunnel: AgentTunnel = new AgentTunnel(this.openStream, this.options.host, this.descriptorMessage(), {
        onIdle: () => {
          countedIdle = true;
          this.idle++;
          idleSince = Date.now();
          idleTimer = setTimeout(() => {
            if (this.idle > this.minIdle && tunnel.abortIfIdle()) shrunk = true;
          }, this.maxIdleTimeMs);
        },
        onActive: (methodName) => {
          clearTimeout(idleTimer);
          countedIdle = false;
          this.idle--;
          (this.options.grpcLogger ?? this.options.logger).debug({ method: methodName }, "tunnel took a request");
          if (this.idle < this.minIdle && !this.stopping.signal.aborted) this.spawn(this.scaleUpStep);
        },
        onCallEnd: this.options.onCallEnd,
        tracing: this.options.tracing,
        moduleOf: this.options.moduleOf,
      });
      this.tunnels.add(tunnel);
      try {
        const outcome = await tunnel.run();
        // A stream that stayed up for a while proves KAS accepts us again.
        if (outcome === "served" || Date.now() - idleSince > 5_000) {
          this.backoff.reset();
          this.options.onHealthy?.();
        }
      } catch (error) {
        this.failed(error);
      } finally {
        clearTimeout(idleTimer);
        if (countedIdle) this.idle--;
        this.tunnels.delete(tunnel);
      }
      if (shrunk || this.workers.size > this.maxTunnels) return;
      // Surplus workers (after a burst) retire once enough tunnels are idle.
      if (this.idle >= this.minIdle + this.scaleUpStep) return;
    }
  }

  /** The descriptor message, rebuilt only when the host's services change. */
  private descriptorMessage(): ConnectRequest {
    const of = this.options.host.descriptor();
    if (this.descriptor?.of !== of) this.descriptor = { of, message: AgentTunnel.descriptorMessage(of) };
    return this.descriptor.message;
  }

  private failed(error: unknown): void {
    const ce = ConnectError.from(error);
    const now = Date.now();
    if (now >= this.retryAt) {
      const delay = this.backoff.nextDelayMs();
      this.retryAt = now + delay;
      const authFailure = ce.code === Code.Unauthenticated || ce.code === Code.PermissionDenied;
      const message = authFailure
        ? "KAS rejected the agent token; check the token (it may be revoked)"
        : "reverse tunnel to KAS failed";
      // Log each distinct failure once per backoff step, not once per worker.
      const key = `${ce.code}:${ce.rawMessage}`;
      const log = authFailure ? this.options.logger.error.bind(this.options.logger) : this.options.logger.warn.bind(this.options.logger);
      if (key !== this.lastErrorLog || delay > 5_000) {
        log({ code: Code[ce.code], reason: ce.rawMessage, retryInMs: delay }, message);
      }
      this.lastErrorLog = key;
      this.options.onFailure?.(ce);
    }
  }

  private async waitForRetry(): Promise<void> {
    const wait = this.retryAt - Date.now();
    if (wait > 0) await sleep(wait, this.stopping.signal);
  }
}
