import { setMaxListeners } from "node:events";
import { create } from "@bufbuild/protobuf";
import type { HandlerContext } from "@connectrpc/connect";
import {
  AgentConfiguration,
  ConfigurationResponseSchema,
  type ConfigurationRequest,
  type ConfigurationResponse,
} from "../../../gen/gitlab/agent/agent_configuration/rpc/rpc_pb.js";
import { ConfigurationFileSchema } from "../../../gen/gitlab/agent/agentcfg/agentcfg_pb.js";
import type { AgentConfigurationSnapshot, AgentInfo, PlatformClient } from "../../../platform-client/platform-client.js";
import type { KasModule, KasModuleContext } from "../../../kas/kas-module.js";
import { rawServerStreamingMethod, type RawServerStreamCall } from "../../../kas/raw-server-stream.js";
import { handlerError } from "../../../grpc/status-errors.js";
import { noConfigCommitId, toAgentConfiguration } from "./to-agent-configuration.js";

export interface AgentConfigurationServerModuleOptions {
  /** The platform's external URL, sent to agents as gitlab_external_url. */
  gitlabExternalUrl?: string;
  /**
   * Re-read interval when the platform cannot push changes (no watchAgentConfigurations).
   * Default 10 000 ms.
   */
  pollIntervalMs?: number;
}

/**
 * A GetConfiguration call served on the raw HTTP/2 stream; its state is the last commit sent, and
 * whether a send still waits for the agent to take it (and a newer read was skipped meanwhile).
 */
type RawConfigCall = RawServerStreamCall<typeof ConfigurationResponseSchema, { lastCommit: string; sending: boolean; behind: boolean }>;

/** The raw calls of one agent: one platform read per change serves all of them. */
interface AgentWatch {
  readonly agentId: number;
  readonly calls: Set<RawConfigCall>;
  reading: boolean;
  /** A change arrived (or a call joined) during a read: read again. */
  again: boolean;
}

/**
 * KAS half of `gitlab.agent.agent_configuration.rpc.AgentConfiguration/GetConfiguration`: sends the
 * agent its accepted config at connect (unless it already has that commit), then every new one as
 * soon as the platform reports a change.
 *
 * Every connected agent holds this stream open, idle nearly all the time. KAS serves gRPC over
 * HTTP/2 calls on the raw stream (`rawAgentMethods`): an idle call is one small object in its
 * agent's set, woken by the platform's change feed (or one shared poll timer). Other protocols
 * (Connect, gRPC-web, HTTP/1.1) and embedders with their own router get the connect-es service
 * (`registerAgentServices`), which behaves the same on the wire.
 */
export function agentConfigurationServerModule(options: AgentConfigurationServerModuleOptions = {}): KasModule {
  /** Set from the context when KAS registers the module. */
  let platform: PlatformClient;
  const pollIntervalMs = options.pollIntervalMs ?? 10_000;
  /** connect-es calls waiting for a change, by agent id. */
  const waiters = new Map<number, Set<() => void>>();
  /** Raw calls by agent id. */
  const watches = new Map<number, AgentWatch>();
  let pollTimer: NodeJS.Timeout | undefined;
  let watching = false;

  function watchPlatform(ctx: KasModuleContext): void {
    platform = ctx.platform;
    if (watching || !platform.watchAgentConfigurations) return;
    watching = true;
    platform.watchAgentConfigurations(wake, ctx.shutdownSignal);
  }

  function wake(agentId: number): void {
    const watch = watches.get(agentId);
    if (watch) void refresh(watch);
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
      const timer = platform.watchAgentConfigurations ? undefined : setTimeout(done, pollIntervalMs);
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

  /** The response for `snap` when it differs from `lastCommit`, else undefined. */
  function responseFor(
    snap: AgentConfigurationSnapshot,
    info: AgentInfo,
    lastCommit: string,
    ctx: KasModuleContext,
  ): ConfigurationResponse | undefined {
    const commitId = snap.commitId || noConfigCommitId;
    if (commitId === lastCommit) return undefined;
    ctx.logger.debug({ agentId: info.agentId, commitId }, "sending agent configuration");
    return create(ConfigurationResponseSchema, {
      configuration: toAgentConfiguration(snap.config, info, options.gitlabExternalUrl),
      commitId,
    });
  }

  let moduleContext: KasModuleContext | undefined;

  /** Reads the agent's config and sends it to each raw call that does not have that commit yet. */
  async function refresh(watch: AgentWatch): Promise<void> {
    const ctx = moduleContext!;
    if (watch.reading) {
      watch.again = true;
      return;
    }
    watch.reading = true;
    try {
      do {
        watch.again = false;
        let snap: AgentConfigurationSnapshot;
        try {
          snap = await snapshot(watch.agentId, ctx.shutdownSignal);
        } catch (error) {
          const failure = handlerError(error);
          for (const call of [...watch.calls]) call.finish(failure);
          continue;
        }
        for (const call of [...watch.calls]) deliver(watch, call, snap, ctx);
      } while (watch.again);
    } finally {
      watch.reading = false;
    }
  }

  /**
   * Sends `snap` to `call` unless it has that commit. Backpressure is per call: a call whose last
   * send is still pending is skipped and reads again once the agent has taken it. A failure (e.g. a
   * config that cannot be converted or encoded) ends only this call, as it would at connect.
   */
  function deliver(watch: AgentWatch, call: RawConfigCall, snap: AgentConfigurationSnapshot, ctx: KasModuleContext): void {
    const state = call.state!;
    if (state.sending) {
      state.behind = true;
      return;
    }
    try {
      const response = responseFor(snap, call.agent, state.lastCommit, ctx);
      if (!response) return;
      state.lastCommit = response.commitId;
      state.sending = true;
      call.send(response).then(
        () => {
          state.sending = false;
          if (!state.behind) return;
          state.behind = false;
          void refresh(watch);
        },
        // A call that ended meanwhile rejects; it has left the set by then.
        () => (state.sending = false),
      );
    } catch (error) {
      state.sending = false;
      call.finish(handlerError(error));
    }
  }

  function pollAll(): void {
    for (const watch of watches.values()) void refresh(watch);
  }

  return {
    name: "agent_configuration",
    agentServices: [AgentConfiguration],
    registerAgentServices(router, ctx) {
      watchPlatform(ctx);
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
              const response = responseFor(await snapshot(info.agentId, signal), info, lastCommit, ctx);
              if (response) {
                yield response;
                lastCommit = response.commitId;
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
    rawAgentMethods(ctx) {
      moduleContext = ctx;
      watchPlatform(ctx);
      return [
        rawServerStreamingMethod({
          method: AgentConfiguration.method.getConfiguration,
          auth: ctx.auth,
          shutdownSignal: ctx.shutdownSignal,
          maxMessageBytes: ctx.maxMessageBytes,
          // A request is a commit id and the agent's metadata: a few hundred bytes.
          maxRequestBytes: 64 * 1024,
          handler: {
            start(call: RawConfigCall, request) {
              call.state = { lastCommit: request.commitId, sending: false, behind: false };
              let watch = watches.get(call.agent.agentId);
              if (!watch) {
                watch = { agentId: call.agent.agentId, calls: new Set(), reading: false, again: false };
                watches.set(watch.agentId, watch);
                if (!platform.watchAgentConfigurations && !pollTimer) pollTimer = setInterval(pollAll, pollIntervalMs).unref();
              }
              // The interest is registered before the read, so a change during it is not missed.
              watch.calls.add(call);
              void refresh(watch);
            },
            ended(call: RawConfigCall) {
              const watch = watches.get(call.agent.agentId);
              if (!watch?.calls.delete(call) || watch.calls.size > 0) return;
              watches.delete(watch.agentId);
              if (watches.size === 0 && pollTimer) {
                clearInterval(pollTimer);
                pollTimer = undefined;
              }
            },
          },
        }),
      ];
    },
  };
}

