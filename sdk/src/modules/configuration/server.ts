import { setMaxListeners } from "node:events";
import { create } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import {
  AgentConfiguration,
  ConfigurationResponseSchema,
  type ConfigurationRequest,
  type ConfigurationResponse,
} from "../../gen/gitlab/agent/agent_configuration/rpc/rpc_pb.js";
import { ConfigurationFileSchema } from "../../gen/gitlab/agent/agentcfg/agentcfg_pb.js";
import type { AgentConfigurationSnapshot, PlatformClient } from "../../platform/platform-client.js";
import type { KasModule } from "../../server/kas-server.js";
import { noConfigCommitId, toAgentConfiguration } from "./to-agent-configuration.js";

export interface AgentConfigurationModuleOptions {
  platform: PlatformClient;
  /** The platform's external URL, sent to agents as gitlab_external_url. */
  gitlabExternalUrl?: string;
  /**
   * Re-read interval when the platform cannot push changes (no watchAgentConfigurations).
   * Default 10 000 ms.
   */
  pollIntervalMs?: number;
}

/**
 * KAS half of `gitlab.agent.agent_configuration.rpc.AgentConfiguration/GetConfiguration`: sends the
 * agent its accepted config at connect (unless it already has that commit), then every new one as
 * soon as the platform reports a change.
 */
export function agentConfigurationModule(options: AgentConfigurationModuleOptions): KasModule {
  const { platform } = options;
  const waiters = new Map<number, Set<() => void>>();
  let watching = false;

  function wake(agentId: number): void {
    const set = waiters.get(agentId);
    if (!set) return;
    waiters.delete(agentId);
    for (const w of set) w();
  }

  /** Resolves on the next change of `agentId`'s config, or after the poll interval, or on abort. */
  function nextChange(agentId: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      let set = waiters.get(agentId);
      if (!set) {
        set = new Set();
        waiters.set(agentId, set);
      }
      const entry = set;
      const timer = platform.watchAgentConfigurations ? undefined : setTimeout(done, options.pollIntervalMs ?? 10_000);
      signal.addEventListener("abort", done, { once: true });
      entry.add(done);
      function done() {
        clearTimeout(timer);
        signal.removeEventListener("abort", done);
        entry.delete(done);
        if (entry.size === 0 && waiters.get(agentId) === entry) waiters.delete(agentId);
        resolve();
      }
    });
  }

  async function snapshot(agentId: number, signal: AbortSignal): Promise<AgentConfigurationSnapshot> {
    if (!platform.getAgentConfiguration) return { agentId, commitId: "", config: create(ConfigurationFileSchema) };
    return platform.getAgentConfiguration(agentId, signal);
  }

  return {
    name: "agent_configuration",
    registerAgentServices(router, ctx) {
      if (!watching && platform.watchAgentConfigurations) {
        watching = true;
        platform.watchAgentConfigurations(wake, ctx.shutdownSignal);
      }
      router.service(AgentConfiguration, {
        async *getConfiguration(req: ConfigurationRequest, hctx: HandlerContext): AsyncIterable<ConfigurationResponse> {
          const info = await ctx.auth.authenticate(hctx.requestHeader, hctx.signal);
          const watch = ctx.auth.watchToken(info);
          const signal = AbortSignal.any([hctx.signal, watch.signal, ctx.shutdownSignal]);
          setMaxListeners(0, signal);
          let lastCommit = req.commitId;
          try {
            for (;;) {
              // Register interest before reading so a change between read and wait is not missed.
              const changed = nextChange(info.agentId, signal);
              const snap = await snapshot(info.agentId, signal);
              const commitId = snap.commitId || noConfigCommitId;
              if (commitId !== lastCommit) {
                ctx.logger.debug({ agentId: info.agentId, commitId }, "sending agent configuration");
                yield create(ConfigurationResponseSchema, {
                  configuration: toAgentConfiguration(snap.config, info, options.gitlabExternalUrl),
                  commitId,
                });
                lastCommit = commitId;
              }
              await changed;
              signal.throwIfAborted();
            }
          } finally {
            watch.release();
          }
        },
      });
    },
  };
}
