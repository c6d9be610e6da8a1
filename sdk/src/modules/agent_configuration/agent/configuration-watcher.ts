import { createClient } from "@connectrpc/connect";
import type { AgentModule, AgentModuleContext } from "../../../agent/agent-module.js";
import { AgentConfiguration } from "../../../gen/gitlab/agent/agent_configuration/rpc/rpc_pb.js";
import { Backoff, sleep } from "../../../util/backoff.js";

/**
 * The agent half of agent_configuration (`GetConfiguration`): keeps the stream open, hands each
 * new configuration to the agent's modules (`AgentModuleContext.applyConfiguration`), reconnects
 * with backoff.
 */
export function agentConfigurationAgentModule(): AgentModule {
  let loop: Promise<void> | undefined;
  return {
    name: "agent_configuration",
    start(ctx) {
      loop = watch(ctx);
    },
    async close() {
      await loop;
    },
  };
}

async function watch(ctx: AgentModuleContext): Promise<void> {
  const client = createClient(AgentConfiguration, ctx.transport);
  const backoff = new Backoff();
  let lastCommit = "";
  while (!ctx.shutdownSignal.aborted) {
    try {
      const stream = client.getConfiguration(
        { commitId: lastCommit, agentMeta: ctx.agentMeta, skipRegister: true },
        { signal: ctx.shutdownSignal },
      );
      for await (const res of stream) {
        if (res.commitId === lastCommit || !res.configuration) continue;
        lastCommit = res.commitId;
        ctx.applyConfiguration(res.configuration, res.commitId);
        ctx.logger.info({ commitId: res.commitId }, "applied agent configuration");
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
}
