import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { AnySchema, anyPack, anyUnpack } from "@bufbuild/protobuf/wkt";
import type { Logger } from "pino";
import { GitPushEventSchema } from "../../../gen/gitlab/agent/event/event_pb.js";
import { GitPushSubscribers, type GitPushEventInfo, type GitPushEvents, type GitPushListener } from "./git-push-events.js";

/** GitLab KAS's Redis pub/sub channel for events between replicas. */
export const KAS_EVENTS_CHANNEL = "kas_events";

/** What RedisGitPushEvents needs of the connection it publishes on (ioredis' `publish`). */
export interface RedisPublisher {
  publish(channel: string, message: Buffer): Promise<unknown>;
}

/**
 * What it needs of a connection in subscriber mode (ioredis: a dedicated connection, which
 * re-subscribes by itself after a reconnect).
 */
export interface RedisSubscriber {
  subscribe(channel: string): Promise<unknown>;
  unsubscribe(channel: string): Promise<unknown>;
  on(event: "messageBuffer", listener: (channel: Buffer, message: Buffer) => void): unknown;
  off(event: "messageBuffer", listener: (channel: Buffer, message: Buffer) => void): unknown;
}

export interface RedisGitPushEventsOptions {
  publisher: RedisPublisher;
  subscriber: RedisSubscriber;
  /** Default "kas_events" (GitLab's). */
  channel?: string;
  logger?: Logger;
}

/**
 * GitPushEvents shared by every KAS replica through Redis pub/sub, as GitLab's KAS does: an event
 * is published on `kas_events` as a protobuf `google.protobuf.Any` wrapping
 * `gitlab.agent.event.GitPushEvent`, and every replica (this one included) delivers what arrives
 * on the channel to its own subscribers. Wire-compatible with GitLab's KAS replicas on the same
 * Redis. The caller owns both connections; `close` only unsubscribes.
 */
export class RedisGitPushEvents implements GitPushEvents {
  private readonly channel: string;
  private readonly local: GitPushSubscribers;
  private readonly onMessage = (channel: Buffer, message: Buffer) => {
    if (channel.toString() !== this.channel) return;
    const event = decodeEvent(message);
    if (!event) {
      this.options.logger?.warn({ bytes: message.length }, `ignoring a message on ${this.channel} that is no GitPushEvent`);
      return;
    }
    this.local.deliver(event);
  };
  private started: Promise<void> | undefined;

  constructor(private readonly options: RedisGitPushEventsOptions) {
    this.channel = options.channel ?? KAS_EVENTS_CHANNEL;
    this.local = new GitPushSubscribers(options.logger);
  }

  /** Subscribes to the channel (once); resolves when Redis confirmed it. */
  start(): Promise<void> {
    return (this.started ??= (async () => {
      this.options.subscriber.on("messageBuffer", this.onMessage);
      await this.options.subscriber.subscribe(this.channel);
    })());
  }

  async publish(event: GitPushEventInfo): Promise<void> {
    await this.options.publisher.publish(this.channel, encodeEvent(event));
  }

  subscribe(listener: GitPushListener, signal: AbortSignal): void {
    this.local.add(listener, signal);
  }

  /** Subscriptions of this replica currently open (tests, metrics). */
  get subscribers(): number {
    return this.local.size;
  }

  async close(): Promise<void> {
    if (!this.started) return;
    this.options.subscriber.off("messageBuffer", this.onMessage);
    await this.options.subscriber.unsubscribe(this.channel).catch(() => {});
  }
}

/** `Any(GitPushEvent)`, GitLab's payload on `kas_events`. */
export function encodeEvent(event: GitPushEventInfo): Buffer {
  const any = anyPack(GitPushEventSchema, create(GitPushEventSchema, { project: { id: BigInt(event.projectId), fullPath: event.fullPath } }));
  return Buffer.from(toBinary(AnySchema, any));
}

/** The GitPushEvent in a `kas_events` message; undefined for anything else (other event types, garbage). */
export function decodeEvent(message: Uint8Array): GitPushEventInfo | undefined {
  try {
    const event = anyUnpack(fromBinary(AnySchema, message), GitPushEventSchema);
    const project = event?.project;
    if (!project || project.id <= 0n || project.id > BigInt(Number.MAX_SAFE_INTEGER) || project.fullPath === "") return undefined;
    return { projectId: Number(project.id), fullPath: project.fullPath };
  } catch {
    return undefined;
  }
}
