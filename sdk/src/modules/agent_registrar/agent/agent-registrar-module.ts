import { Code, ConnectError, createClient, type Transport } from "@connectrpc/connect";
import type { Logger } from "pino";
import { AgentRegistrar } from "../../../gen/gitlab/agent/agent_registrar/rpc/rpc_pb.js";
import type { AgentMeta } from "../../../gen/gitlab/agent/entity/entity_pb.js";
import type { AgentHealth } from "../../../agent/agent-health.js";
import type { AgentModule } from "../../../agent/agent-module.js";
import { Backoff, sleep } from "../../../util/backoff.js";

/**
 * Keeps the agent registered with KAS (AgentRegistrar/Register): at start, every `intervalMs`, and
 * again soon after the tunnel pool reports trouble (KAS may have restarted or the connection
 * changed). Failed attempts back off; `stop()` ends the loop.
 */
export class AgentRegistration {
  private readonly client;
  private readonly stopped = new AbortController();
  private wake: (() => void) | undefined;
  private loop: Promise<void> | undefined;

  constructor(
    transport: Transport,
    private readonly meta: AgentMeta,
    readonly podId: bigint,
    private readonly logger: Logger,
    /** Default 300 000 ms, as agentk. */
    private readonly intervalMs = 300_000,
    /** Told about each registration and each failure (readiness). */
    private readonly health?: AgentHealth,
  ) {
    this.client = createClient(AgentRegistrar, transport);
  }

  start(): void {
    this.loop ??= this.run();
  }

  /** Registers again as soon as possible (after a reconnect). */
  registerSoon(): void {
    this.wake?.();
  }

  async stop(): Promise<void> {
    this.stopped.abort();
    this.wake?.();
    await this.loop;
  }

  private async run(): Promise<void> {
    const backoff = new Backoff();
    while (!this.stopped.signal.aborted) {
      let delay = this.intervalMs;
      try {
        await this.client.register({ agentMeta: this.meta, podId: this.podId }, { signal: this.stopped.signal, timeoutMs: 20_000 });
        backoff.reset();
        this.health?.reportRegistered();
      } catch (error) {
        if (this.stopped.signal.aborted) return;
        const ce = ConnectError.from(error);
        this.health?.reportKasFailure(`registration: ${Code[ce.code]}: ${ce.rawMessage}`);
        delay = backoff.nextDelayMs();
        this.logger.debug({ err: error, retryInMs: delay }, "agent registration failed");
      }
      await this.sleepOrWake(delay);
    }
  }

  private async sleepOrWake(ms: number): Promise<void> {
    const woken = new AbortController();
    this.wake = () => woken.abort();
    await sleep(ms, AbortSignal.any([woken.signal, this.stopped.signal]));
    this.wake = undefined;
  }
}

export interface AgentRegistrarModuleOptions {
  /** Re-registration interval. Default 300 000 ms (agentk). */
  registerIntervalMs?: number;
}

/**
 * The agent half of agent_registrar: registers this agent process with KAS at start, every
 * `registerIntervalMs`, and soon after the tunnels fail (KAS restarted, connection changed).
 */
export function agentRegistrarAgentModule(options: AgentRegistrarModuleOptions = {}): AgentModule {
  let registration: AgentRegistration | undefined;
  return {
    name: "agent_registrar",
    start(ctx) {
      const started = new AgentRegistration(ctx.transport, ctx.agentMeta, ctx.podId, ctx.logger, options.registerIntervalMs, ctx.health);
      registration = started;
      ctx.onTunnelFailure(() => started.registerSoon());
      started.start();
    },
    async close() {
      await registration?.stop();
    },
  };
}
