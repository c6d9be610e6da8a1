import { createClient } from "@connectrpc/connect";
import type { Logger } from "pino";
import { AgentConfiguration } from "../../../gen/gitlab/agent/agent_configuration/rpc/rpc_pb.js";
import { log_level_enum, type AgentConfiguration as AgentConfig } from "../../../gen/gitlab/agent/agentcfg/agentcfg_pb.js";
import type { AgentMeta } from "../../../gen/gitlab/agent/entity/entity_pb.js";
import type { AgentModule } from "../../../agent/create-agent.js";
import { Backoff, sleep } from "../../../util/backoff.js";

export interface AgentConfigurationWatcherOptions {
  /** The agent's root logger: `observability.logging.level` is applied to it. */
  logger: Logger;
  agentMeta: AgentMeta;
  /** Called with each configuration applied (after the logger is updated). */
  onConfiguration?(config: AgentConfig, commitId: string): void;
}

const pinoLevels: Record<log_level_enum, string> = {
  [log_level_enum.info]: "info",
  [log_level_enum.debug]: "debug",
  [log_level_enum.warn]: "warn",
  [log_level_enum.error]: "error",
};

/**
 * Agent half of GetConfiguration: keeps the stream open, applies each configuration it receives
 * (log level now; later modules subscribe through `onConfiguration`), reconnects with backoff.
 */
export function agentConfigurationWatcher(options: AgentConfigurationWatcherOptions): AgentModule {
  return {
    name: "agent_configuration",
    async run(ctx) {
      const client = createClient(AgentConfiguration, ctx.transport);
      const backoff = new Backoff();
      let lastCommit = "";
      while (!ctx.shutdownSignal.aborted) {
        try {
          const stream = client.getConfiguration(
            { commitId: lastCommit, agentMeta: options.agentMeta, skipRegister: true },
            { signal: ctx.shutdownSignal },
          );
          for await (const res of stream) {
            if (res.commitId === lastCommit || !res.configuration) continue;
            const level = pinoLevels[res.configuration.observability?.logging?.level ?? log_level_enum.info] ?? "info";
            options.logger.level = level;
            lastCommit = res.commitId;
            ctx.logger.info({ commitId: res.commitId, logLevel: level }, "applied agent configuration");
            options.onConfiguration?.(res.configuration, res.commitId);
            backoff.reset();
          }
        } catch (error) {
          if (ctx.shutdownSignal.aborted) return;
          const delay = backoff.nextDelayMs();
          ctx.logger.debug({ err: error, retryInMs: delay }, "configuration stream failed");
          await sleep(delay, ctx.shutdownSignal);
          continue;
        }
        // The server ended the stream cleanly (e.g. KAS restarting): reconnect after a pause.
        await sleep(backoff.nextDelayMs(), ctx.shutdownSignal);
      }
    },
  };
}
