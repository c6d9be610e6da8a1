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

  register(tunnel: ServerTunnel): () => void {
    this.all.add(tunnel);
    const entry = this.entry(tunnel.agent.agentId);
    const waiterIndex = entry.waiters.findIndex((w) => tunnel.serves(w.methodName));
    if (waiterIndex >= 0) {
      const [waiter] = entry.waiters.splice(waiterIndex, 1);
      waiter.resolve(tunnel);
    } else {
      entry.idle.add(tunnel);
    }
    return () => {
      this.all.delete(tunnel);
      entry.idle.delete(tunnel);
      this.prune(tunnel.agent.agentId, entry);
    };
  }

  acquire(agentId: number, methodName: string, signal: AbortSignal): Promise<ServerTunnel> {
    const entry = this.entry(agentId);
    // A caller that has already given up takes no tunnel, idle or not (the wait fails below).
    if (!signal.aborted) {
      for (const tunnel of entry.idle) {
        if (tunnel.serves(methodName) && !tunnel.isClosed) {
          entry.idle.delete(tunnel);
          return Promise.resolve(tunnel);
        }
      }
    }
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
    const agents = new Set<number>();
    for (const [, entry] of this.agents) idle += entry.idle.size;
    for (const tunnel of this.all) agents.add(tunnel.agent.agentId);
    return { idleTunnels: idle, busyTunnels: this.all.size - idle, agents: agents.size };
  }

  close(): void {
    this.closeTunnels(() => true, kasShuttingDownError());
  }

  private agentHasTunnels(agentId: number): boolean {
    for (const tunnel of this.all) if (tunnel.agent.agentId === agentId) return true;
    return false;
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
