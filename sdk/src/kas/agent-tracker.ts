import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import type { AgentMeta } from "../gen/gitlab/agent/entity/entity_pb.js";
import type { AgentConnection, AgentConnectionsSource } from "../platform-client/connections.js";
import type { AgentInfo } from "../platform-client/platform-client.js";
import { onAbort } from "./connection-context.js";

/** The identity of this KAS process, shown in connection listings. */
export function defaultKasInstanceId(): string {
  return `${hostname()}-${process.pid}-${randomBytes(3).toString("hex")}`;
}

export interface AgentTrackerOptions {
  kasInstance: string;
  /** A registration not refreshed for this long is forgotten. Default 900 000 ms (agentk refreshes every 5 min). */
  registrationTtlMs?: number;
}

/** Told about every connection the tracker starts and stops listing (e.g. to share it with other replicas). */
export interface AgentConnectionObserver {
  registered(connection: AgentConnection): void;
  forgotten(connection: AgentConnection): void;
}

/** Calls `end` when a registration ends; returns a function that stops watching. */
export type EndWatch = (end: () => void) => () => void;

interface Tracked {
  connection: AgentConnection;
  expiresAt: number;
  release: () => void;
}

/**
 * Knows which agent processes are connected to this KAS. Agents register (AgentRegistrar/Register)
 * with a random pod_id; the entry lives while the HTTP/2 connection that registered it is open, and
 * at most `registrationTtlMs` without a refresh.
 */
export class AgentTracker implements AgentConnectionsSource {
  private readonly byAgent = new Map<number, Map<string, Tracked>>();
  private readonly ttl: number;
  private readonly observers = new Set<AgentConnectionObserver>();
  private readonly listeners: Array<(change: "registered" | "forgotten", connection: AgentConnection) => void> = [];

  /** Calls `listener` when an agent process first registers and when its entry goes (not on refreshes). */
  onChange(listener: (change: "registered" | "forgotten", connection: AgentConnection) => void): void {
    this.listeners.push(listener);
  }

  private emit(change: "registered" | "forgotten", connection: AgentConnection): void {
    for (const listener of this.listeners) listener(change, { ...connection });
  }

  constructor(private readonly options: AgentTrackerOptions) {
    this.ttl = options.registrationTtlMs ?? 900_000;
  }

  /** Tells `observer` about connections from now on; returns a function that stops that. */
  observe(observer: AgentConnectionObserver): () => void {
    this.observers.add(observer);
    return () => void this.observers.delete(observer);
  }

  /** Every connection listed here now. */
  allConnections(): AgentConnection[] {
    const all: AgentConnection[] = [];
    for (const conns of this.byAgent.values()) for (const tracked of conns.values()) all.push({ ...tracked.connection });
    return all;
  }

  /**
   * Records a registration. `ended` says when the entry ends: a signal that aborts when the
   * registering connection closes (or its token is revoked), or a function that calls its
   * argument then and returns a function that stops watching. The entry is removed then and
   * `onForget` called.
   */
  register(
    agent: AgentInfo,
    podId: bigint,
    meta: AgentMeta | undefined,
    ended: AbortSignal | EndWatch,
    onForget: () => void = () => {},
  ): void {
    const connectionId = podId.toString();
    let conns = this.byAgent.get(agent.agentId);
    if (!conns) {
      conns = new Map();
      this.byAgent.set(agent.agentId, conns);
    }
    const existing = conns.get(connectionId);
    existing?.release();
    let released = false;
    const tracked: Tracked = {
      connection: {
        connectionId,
        agentId: agent.agentId,
        projectId: agent.projectId,
        agentVersion: meta?.version ?? "",
        agentCommit: meta?.commitId ?? "",
        podName: meta?.podName ?? "",
        podNamespace: meta?.podNamespace ?? "",
        connectedAt: existing?.connection.connectedAt ?? new Date(),
        kasInstance: this.options.kasInstance,
      },
      expiresAt: Date.now() + this.ttl,
      // Until the watch is set up below.
      release: () => {
        released = true;
        onForget();
      },
    };
    conns.set(connectionId, tracked);
    for (const observer of this.observers) observer.registered({ ...tracked.connection });
    if (!existing) this.emit("registered", tracked.connection);
    const forget = () => this.remove(agent.agentId, connectionId, tracked);
    const stopWatching = typeof ended === "function" ? ended(forget) : onAbort(ended, forget);
    if (released) {
      // Ended while the watch was being set up.
      stopWatching();
    } else {
      tracked.release = () => {
        stopWatching();
        onForget();
      };
    }
  }

  /** Drops every connection of an agent whose token was revoked or which was deleted. */
  forgetAgent(agentId: number): void {
    const conns = this.byAgent.get(agentId);
    if (!conns) return;
    for (const tracked of conns.values()) {
      tracked.release();
      this.announceForgotten(tracked);
    }
    this.byAgent.delete(agentId);
  }

  async listConnections(agentId: number): Promise<AgentConnection[]> {
    const conns = this.byAgent.get(agentId);
    if (!conns) return [];
    const now = Date.now();
    const live: AgentConnection[] = [];
    for (const [id, tracked] of conns) {
      if (tracked.expiresAt <= now) this.remove(agentId, id, tracked);
      else live.push({ ...tracked.connection });
    }
    return live;
  }

  /** The connections of the agents whose configuration project is `projectId`. */
  async listProjectConnections(projectId: number): Promise<AgentConnection[]> {
    const live: AgentConnection[] = [];
    for (const agentId of [...this.byAgent.keys()]) {
      for (const c of await this.listConnections(agentId)) if (c.projectId === projectId) live.push(c);
    }
    return live;
  }

  /** Number of connected agent processes (for metrics). */
  count(): number {
    let n = 0;
    for (const conns of this.byAgent.values()) n += conns.size;
    return n;
  }

  private remove(agentId: number, connectionId: string, tracked: Tracked): void {
    const conns = this.byAgent.get(agentId);
    if (conns?.get(connectionId) !== tracked) return;
    tracked.release();
    conns.delete(connectionId);
    if (conns.size === 0) this.byAgent.delete(agentId);
    this.announceForgotten(tracked);
  }

  private announceForgotten(tracked: Tracked): void {
    for (const observer of this.observers) observer.forgotten({ ...tracked.connection });
    this.emit("forgotten", tracked.connection);
  }
}
