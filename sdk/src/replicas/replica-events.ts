import { randomBytes } from "node:crypto";
import { create, fromBinary, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import type { Redis } from "ioredis";
import type { Logger } from "pino";
import { ReplicaEventSchema, type ReplicaEvent } from "../gen/kasbridge/replicas/v1/replicas_pb.js";
import type { PlatformClient, TokenRevocation } from "../platform-client/platform-client.js";

export interface ReplicaEventsOptions {
  /** Connection that publishes (the replica's command connection). */
  publisher: Redis;
  /** Connection in subscriber mode (a connection of its own; it re-subscribes after reconnecting). */
  subscriber: Redis;
  /** The channel, `redisKeys(prefix).replicaEvents()`. */
  channel: string;
  logger: Logger;
}

/**
 * What happens on one replica's platform that the others must act on at once (a revoked token or
 * finished CI job: close what it authorized; a changed agent configuration: push it to the agent),
 * on a Redis pub/sub channel. Each replica delivers its own events locally and publishes them;
 * events from the others arrive through the channel within milliseconds. Events published while
 * Redis is down are lost for the other replicas (see docs/operations.md for the backstops).
 */
export class RedisReplicaEvents {
  /** This replica's id in events, so it skips its own. */
  readonly origin = randomBytes(8).toString("hex");
  private readonly listeners = new Set<(event: ReplicaEvent) => void>();
  private readonly onMessage = (channel: Buffer, message: Buffer) => {
    if (channel.toString() !== this.options.channel) return;
    let event: ReplicaEvent;
    try {
      event = fromBinary(ReplicaEventSchema, message);
    } catch {
      this.options.logger.warn({ bytes: message.length }, "ignoring an undecodable message on the replicas' event channel");
      return;
    }
    if (event.origin === this.origin) return;
    for (const listener of [...this.listeners]) listener(event);
  };
  private started: Promise<void> | undefined;

  constructor(private readonly options: ReplicaEventsOptions) {}

  /** Subscribes (once). Resolves when Redis confirmed it, or at once while Redis is down (queued). */
  start(): Promise<void> {
    return (this.started ??= (async () => {
      this.options.subscriber.on("messageBuffer", this.onMessage);
      const subscribed = this.options.subscriber.subscribe(this.options.channel);
      // A subscriber that is not connected yet subscribes when it connects.
      if (this.options.subscriber.status === "ready") await subscribed;
      else subscribed.catch(() => {});
    })());
  }

  /** Tells the other replicas; failures are logged (the event is lost for them). */
  publish(event: MessageInitShape<typeof ReplicaEventSchema>["event"]): void {
    const message = Buffer.from(toBinary(ReplicaEventSchema, create(ReplicaEventSchema, { origin: this.origin, event })));
    this.options.publisher.publish(this.options.channel, message).catch((error: unknown) => {
      this.options.logger.warn({ err: (error as Error).message, event: event?.case }, "could not tell the other replicas (Redis unavailable)");
    });
  }

  /** Calls `listener` with each event of the other replicas; returns a function that stops that. */
  onEvent(listener: (event: ReplicaEvent) => void): () => void {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    this.listeners.clear();
    if (!this.started) return;
    this.options.subscriber.off("messageBuffer", this.onMessage);
    await this.options.subscriber.unsubscribe(this.options.channel).catch(() => {});
  }
}

/**
 * A PlatformClient whose revocations and configuration changes are those of every replica: the
 * inner client's, which it also publishes to the others (for a platform in this process, whose
 * changes only this replica sees), and those the other replicas publish. A platform that every
 * replica watches itself (GitLab's internal API, our feeds over HTTP) needs no wrapping.
 */
export function replicatedPlatformClient(inner: PlatformClient, events: RedisReplicaEvents): PlatformClient & { close(): void } {
  const stop = new AbortController();
  inner.watchTokenRevocations((r) => events.publish({ case: "tokenRevoked", value: revocationEvent(r) }), stop.signal);
  inner.watchAgentConfigurations?.((agentId) => events.publish({ case: "agentConfigurationChanged", value: { agentId: BigInt(agentId) } }), stop.signal);
  const fromOthers = <T>(pick: (event: ReplicaEvent) => T | undefined, deliver: (value: T) => void, signal: AbortSignal) => {
    if (signal.aborted) return;
    const off = events.onEvent((event) => {
      const value = pick(event);
      if (value !== undefined) deliver(value);
    });
    signal.addEventListener("abort", off, { once: true });
  };
  const overrides: Partial<PlatformClient> & { close(): void } = {
    watchTokenRevocations(onRevoked, signal) {
      inner.watchTokenRevocations(onRevoked, signal);
      fromOthers((e) => (e.event.case === "tokenRevoked" ? revocationFromEvent(e.event.value) : undefined), onRevoked, signal);
    },
    close: () => stop.abort(),
  };
  if (inner.watchAgentConfigurations) {
    const watchInner = inner.watchAgentConfigurations.bind(inner);
    overrides.watchAgentConfigurations = (onChange, signal) => {
      watchInner(onChange, signal);
      fromOthers((e) => (e.event.case === "agentConfigurationChanged" ? Number(e.event.value.agentId) : undefined), onChange, signal);
    };
  }
  // Every other method (the interface grows with the modules) is the inner client's own.
  const client = new Proxy(inner, {
    get(target, property) {
      if (Object.hasOwn(overrides, property)) return overrides[property as keyof typeof overrides];
      const value: unknown = Reflect.get(target, property);
      return typeof value === "function" ? (value as (...args: unknown[]) => unknown).bind(target) : value;
    },
  }) as PlatformClient & { close(): void };
  return client;
}

function revocationEvent(r: TokenRevocation) {
  const none = { agentId: 0n, tokenId: 0n, jobId: 0n, userId: 0n };
  switch (r.kind) {
    case "agent_token":
      return { ...none, kind: r.kind, agentId: BigInt(r.agentId), tokenId: BigInt(r.tokenId) };
    case "ci_job":
      return { ...none, kind: r.kind, jobId: BigInt(r.jobId) };
    case "personal_access_token":
      return { ...none, kind: r.kind, userId: BigInt(r.userId), tokenId: BigInt(r.tokenId) };
    case "user":
      return { ...none, kind: r.kind, userId: BigInt(r.userId) };
  }
}

/** The revocation in an event; undefined for a kind this version does not know (from a newer replica). */
function revocationFromEvent(e: { kind: string; agentId: bigint; tokenId: bigint; jobId: bigint; userId: bigint }): TokenRevocation | undefined {
  switch (e.kind) {
    case "agent_token":
      return { kind: "agent_token", agentId: Number(e.agentId), tokenId: Number(e.tokenId) };
    case "ci_job":
      return { kind: "ci_job", jobId: Number(e.jobId) };
    case "personal_access_token":
      return { kind: "personal_access_token", userId: Number(e.userId), tokenId: Number(e.tokenId) };
    case "user":
      return { kind: "user", userId: Number(e.userId) };
    default:
      return undefined;
  }
}
