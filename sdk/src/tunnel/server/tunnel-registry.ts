import { Code, ConnectError } from "@connectrpc/connect";
import { kasShuttingDownError } from "../../grpc/status-errors.js";
import type { ServerTunnel } from "./server-tunnel.js";

/**
 * Where KAS finds an idle tunnel of an agent. In-memory for one KAS; a Redis-backed implementation
 * (several replicas, routing through the private API) plugs in behind the same interface.
 */
export interface TunnelRegistry {
  /** Offers an idle tunnel; returns a function that withdraws it (when it ends). */
  register(tunnel: ServerTunnel): () => void;
  /**
   * Takes an idle tunnel of `agentId` that serves `methodName`, waiting for one until `signal`
   * aborts; then throws UNAVAILABLE naming the agent. With `signal` already aborted it takes none.
   */
  acquire(agentId: number, methodName: string, signal: AbortSignal): Promise<ServerTunnel>;
  /** Takes an idle tunnel of `agentId` that serves `methodName` if there is one now; never waits. */
  tryAcquire(agentId: number, methodName: string): ServerTunnel | undefined;
  /**
   * Gives back a tunnel taken with `acquire`/`tryAcquire` whose call was never started (the
   * replica that asked for it through the private API went elsewhere): it is idle again, or goes
   * to a waiter. A tunnel that closed meanwhile is dropped.
   */
  release(tunnel: ServerTunnel): void;
  /** Agents with at least one tunnel here (idle or busy). */
  agentIds(): Iterable<number>;
  /**
   * Calls `listener(agentId, true)` when an agent's first tunnel arrives here and
   * `listener(agentId, false)` when its last one ends (what a shared directory of replicas
   * records). Returns a function that stops the calls.
   */
  onPresenceChange(listener: (agentId: number, present: boolean) => void): () => void;
  /** Closes every tunnel (idle or busy) that `predicate` selects, failing their calls with `error`. */
  closeTunnels(predicate: (tunnel: ServerTunnel) => boolean, error: ConnectError): number;
  /** Counts for metrics: idle tunnels and agents with at least one tunnel. */
  stats(): { idleTunnels: number; busyTunnels: number; agents: number };
  /** Closes all tunnels and fails all waiters. */
  close(): void;
}

interface Waiter {
  methodName: string;
  resolve(tunnel: ServerTunnel): void;
}

interface AgentEntry {
  idle: Set<ServerTunnel>;
  waiters: Waiter[];
}

export class InMemoryTunnelRegistry implements TunnelRegistry {
  private readonly agents = new Map<number, AgentEntry>();
  private readonly all = new Set<ServerTunnel>();
  /** Tunnels (idle or busy) per agent, for presence. */
  private readonly counts = new Map<number, number>();
  private readonly presenceListeners = new Set<(agentId: number, present: boolean) => void>();

  register(tunnel: ServerTunnel): () => void {
    const agentId = tunnel.agent.agentId;
    if (!this.all.has(tunnel)) {
      this.all.add(tunnel);
      const count = (this.counts.get(agentId) ?? 0) + 1;
      this.counts.set(agentId, count);
      if (count === 1) this.announce(agentId, true);
    }
    this.offer(tunnel);
    let withdrawn = false;
    return () => {
      if (withdrawn) return;
      withdrawn = true;
      this.all.delete(tunnel);
      const entry = this.agents.get(agentId);
      if (entry) {
        entry.idle.delete(tunnel);
        this.prune(agentId, entry);
      }
      const count = (this.counts.get(agentId) ?? 1) - 1;
      if (count > 0) {
        this.counts.set(agentId, count);
      } else {
        this.counts.delete(agentId);
        this.announce(agentId, false);
      }
    };
  }

  release(tunnel: ServerTunnel): void {
    if (tunnel.isClosed || tunnel.isTaken || !this.all.has(tunnel)) return;
    tunnel.reserved = false;
    this.offer(tunnel);
  }

  agentIds(): Iterable<number> {
    return this.counts.keys();
  }

  onPresenceChange(listener: (agentId: number, present: boolean) => void): () => void {
    this.presenceListeners.add(listener);
    return () => void this.presenceListeners.delete(listener);
  }

  tryAcquire(agentId: number, methodName: string): ServerTunnel | undefined {
    const entry = this.agents.get(agentId);
    if (!entry) return undefined;
    for (const tunnel of entry.idle) {
      if (tunnel.serves(methodName) && !tunnel.isClosed) {
        entry.idle.delete(tunnel);
        this.prune(agentId, entry);
        tunnel.reserved = true;
        return tunnel;
      }
    }
    return undefined;
  }

  acquire(agentId: number, methodName: string, signal: AbortSignal): Promise<ServerTunnel> {
    // A caller that has already given up takes no tunnel, idle or not (the wait fails below).
    if (!signal.aborted) {
      const idle = this.tryAcquire(agentId, methodName);
      if (idle) return Promise.resolve(idle);
    }
    const entry = this.entry(agentId);
    return new Promise((resolve, reject) => {
      const unavailable = () => {
        const known = this.agentHasTunnels(agentId);
        reject(
          new ConnectError(
            known
              ? `no idle tunnel of agent ${agentId} serving ${methodName} became free in time`
              : `agent ${agentId} is not connected`,
            Code.Unavailable,
          ),
        );
      };
      if (signal.aborted) {
        this.prune(agentId, entry);
        return unavailable();
      }
      const waiter: Waiter = {
        methodName,
        resolve: (tunnel) => {
          signal.removeEventListener("abort", onAbort);
          resolve(tunnel);
        },
      };
      const onAbort = () => {
        const i = entry.waiters.indexOf(waiter);
        if (i >= 0) entry.waiters.splice(i, 1);
        this.prune(agentId, entry);
        unavailable();
      };
      signal.addEventListener("abort", onAbort, { once: true });
      entry.waiters.push(waiter);
    });
  }

  closeTunnels(predicate: (tunnel: ServerTunnel) => boolean, error: ConnectError): number {
    let closed = 0;
    for (const tunnel of [...this.all]) {
      if (predicate(tunnel)) {
        tunnel.close(error);
        closed++;
      }
    }
    return closed;
  }

  stats(): { idleTunnels: number; busyTunnels: number; agents: number } {
    let idle = 0;
    for (const [, entry] of this.agents) idle += entry.idle.size;
    return { idleTunnels: idle, busyTunnels: this.all.size - idle, agents: this.counts.size };
  }

  close(): void {
    this.closeTunnels(() => true, kasShuttingDownError());
  }

  private agentHasTunnels(agentId: number): boolean {
    return this.counts.has(agentId);
  }

  /** Hands an idle tunnel to the first waiter it serves, or keeps it idle. */
  private offer(tunnel: ServerTunnel): void {
    const entry = this.entry(tunnel.agent.agentId);
    const waiterIndex = entry.waiters.findIndex((w) => tunnel.serves(w.methodName));
    if (waiterIndex >= 0) {
      const [waiter] = entry.waiters.splice(waiterIndex, 1);
      tunnel.reserved = true;
      waiter!.resolve(tunnel);
    } else {
      entry.idle.add(tunnel);
    }
  }

  private announce(agentId: number, present: boolean): void {
    for (const listener of [...this.presenceListeners]) listener(agentId, present);
  }

  private entry(agentId: number): AgentEntry {
    let entry = this.agents.get(agentId);
    if (!entry) {
      entry = { idle: new Set(), waiters: [] };
      this.agents.set(agentId, entry);
    }
    return entry;
  }

  private prune(agentId: number, entry: AgentEntry): void {
    if (entry.idle.size === 0 && entry.waiters.length === 0 && this.agents.get(agentId) === entry) {
      this.agents.delete(agentId);
    }
  }
}
