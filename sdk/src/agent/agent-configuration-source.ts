import type { AgentConfiguration } from "../gen/gitlab/agent/agentcfg/agentcfg_pb.js";
import type { AgentModule, AgentModuleContext } from "./agent-module.js";

/** One configuration the agent applied, with the commit it came from. */
export interface AppliedAgentConfiguration {
  config: AgentConfiguration;
  commitId: string;
}

export type AgentConfigurationListener = (applied: AppliedAgentConfiguration) => void;

/**
 * The agent's configuration as modules see it (GitLab's modules get a channel of configurations):
 * the latest one, and every later one. Fed by the module's `applyConfiguration`.
 */
export class AgentConfigurationSource {
  private latest: AppliedAgentConfiguration | undefined;
  private readonly listeners = new Set<AgentConfigurationListener>();

  /** The configuration applied last; undefined until the first one arrives. */
  get current(): AppliedAgentConfiguration | undefined {
    return this.latest;
  }

  /** Calls `listener` with the current configuration (if any) and each later one, until `signal` aborts. */
  watch(listener: AgentConfigurationListener, signal: AbortSignal): void {
    if (signal.aborted) return;
    const entry: AgentConfigurationListener = (applied) => listener(applied);
    this.listeners.add(entry);
    signal.addEventListener("abort", () => this.listeners.delete(entry), { once: true });
    if (this.latest) entry(this.latest);
  }

  /** Resolves with the current configuration, or the first one to arrive; undefined if `signal` aborts first. */
  first(signal: AbortSignal): Promise<AppliedAgentConfiguration | undefined> {
    if (this.latest) return Promise.resolve(this.latest);
    return new Promise((resolve) => {
      const stop = new AbortController();
      const done = (value: AppliedAgentConfiguration | undefined) => {
        stop.abort();
        signal.removeEventListener("abort", onAbort);
        resolve(value);
      };
      const onAbort = () => done(undefined);
      signal.addEventListener("abort", onAbort, { once: true });
      this.watch(done, AbortSignal.any([signal, stop.signal]));
    });
  }

  publish(config: AgentConfiguration, commitId: string): void {
    this.latest = { config, commitId };
    for (const listener of [...this.listeners]) listener(this.latest);
  }
}

/**
 * An agent module whose work is one loop that follows the agent's configuration (GitLab's modules
 * that read a channel of configurations): `run` starts with the agent, gets each configuration
 * the agent applies through `configuration`, and must return once `ctx.shutdownSignal` aborts;
 * `close` waits for it. A failure of the loop is logged.
 *
 * With `leaderOnly` (GitLab's leader modules), `run` runs only while this process leads the
 * agent's pods (`ctx.leadership`): it starts on each win with a `ctx.shutdownSignal` that aborts
 * when leadership ends (or the agent stops), and sees the latest configuration at once.
 */
export function configuredAgentModule(
  name: string,
  configSections: readonly string[],
  run: (ctx: AgentModuleContext, configuration: AgentConfigurationSource) => Promise<void>,
  options: { leaderOnly?: boolean } = {},
): AgentModule {
  const configuration = new AgentConfigurationSource();
  let loop: Promise<void> | undefined;
  return {
    name,
    configSections,
    start(ctx) {
      if (options.leaderOnly) {
        ctx.leadership.run(name, (term) => run({ ...ctx, shutdownSignal: term }, configuration));
        return;
      }
      loop = run(ctx, configuration).catch((err: unknown) => ctx.logger.error({ err }, `the ${name} module failed`));
    },
    applyConfiguration(config, commitId) {
      configuration.publish(config, commitId);
    },
    async close() {
      await loop;
    },
  };
}
