import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { Counter, Gauge, type Registry } from "prom-client";
import { create } from "@bufbuild/protobuf";
import {
  GitLabFlux,
  ReconcileProjectsResponseSchema,
  type ReconcileProjectsRequest,
  type ReconcileProjectsResponse,
} from "../../../gen/gitlab/agent/flux/rpc/rpc_pb.js";
import type { PlatformClient } from "../../../platform-client/platform-client.js";
import { openAgentCall } from "../../../kas/agent-call.js";
import type { KasModule, KasModuleContext } from "../../../kas/kas-module.js";
import { AsyncQueue } from "../../../util/async-queue.js";
import type { GitPushEventInfo, GitPushEvents } from "../../notifications/server/git-push-events.js";
import { ProjectAccessCache } from "./project-access-cache.js";

export interface FluxServerModuleOptions {
  platform: PlatformClient;
  /** The push events the notifications module publishes. */
  events: GitPushEvents;
  /** Pushes waiting per stream while the agent is slow; more are dropped (counted). Default 10 (GitLab). */
  bufferSize?: number;
  /** See ProjectAccessCacheOptions.ttlMs. Default 300 000 ms. */
  accessCacheTtlMs?: number;
  /** See ProjectAccessCacheOptions.errorTtlMs. Default 60 000 ms. */
  accessErrorCacheTtlMs?: number;
}

interface FluxMetrics {
  notified: Counter;
  dropped: Counter;
  uniqueProjects: Gauge;
  seenProjects: Set<number>;
}

/**
 * KAS half of `gitlab.agent.flux.rpc.GitLabFlux/ReconcileProjects`: an agent names the projects
 * its Flux Receivers watch (full paths); every push to one of them that the agent may read
 * (`verify_project_access`, cached) is sent down the stream, so the agent can trigger Flux's
 * reconciliation at once. The stream never ends by itself: the agent cancels it when its set of
 * projects changes, and revocation or KAS shutdown end it.
 */
export function fluxServerModule(options: FluxServerModuleOptions): KasModule {
  const bufferSize = options.bufferSize ?? 10;
  const access = new ProjectAccessCache({
    platform: options.platform,
    ttlMs: options.accessCacheTtlMs,
    errorTtlMs: options.accessErrorCacheTtlMs,
  });
  let metrics: FluxMetrics | undefined;

  function metricsFor(registry: Registry | undefined): FluxMetrics | undefined {
    if (!registry || metrics) return metrics;
    const seenProjects = new Set<number>();
    metrics = {
      seenProjects,
      notified: new Counter({
        name: "flux_git_push_notifications_total",
        help: "Git push notifications sent to agents on ReconcileProjects streams",
        registers: [registry],
      }),
      dropped: new Counter({
        name: "flux_dropped_git_push_notifications_total",
        help: "Git push notifications dropped because an agent's stream buffer was full",
        registers: [registry],
      }),
      uniqueProjects: new Gauge({
        name: "flux_git_push_notified_unique_projects",
        help: "Distinct projects whose pushes were sent to an agent since KAS started",
        registers: [registry],
        collect() {
          this.set(seenProjects.size);
        },
      }),
    };
    return metrics;
  }

  async function* reconcileProjects(
    req: ReconcileProjectsRequest,
    hctx: HandlerContext,
    ctx: KasModuleContext,
  ): AsyncIterable<ReconcileProjectsResponse> {
    req.project.forEach((p, i) => {
      if (p.id === "") throw new ConnectError(`invalid ReconcileProjectsRequest.Project[${i}]: Id: value length must be at least 1 runes`, Code.InvalidArgument);
    });
    const projects = new Set(req.project.map((p) => p.id));
    const m = metricsFor(ctx.metrics);
    const call = await openAgentCall(ctx, hctx);
    const { agent: info, token, signal } = call;
    const queue = new AsyncQueue<GitPushEventInfo>(bufferSize);
    const onAbort = () => queue.close(signal.reason ?? new ConnectError("stream ended", Code.Canceled));
    signal.addEventListener("abort", onAbort, { once: true });
    options.events.subscribe((event) => {
      if (!projects.has(event.fullPath)) return;
      if (queue.size >= bufferSize) {
        m?.dropped.inc();
        ctx.logger.debug({ agentId: info.agentId, project: event.fullPath }, "Flux notification dropped: the agent's buffer is full");
        return;
      }
      void queue.push(event).catch(() => {});
    }, signal);
    ctx.logger.info({ agentId: info.agentId, projects: projects.size }, "ReconcileProjects stream opened");
    try {
      for await (const event of queue) {
        let allowed: boolean;
        try {
          allowed = await access.verify(token, event.fullPath, signal);
        } catch (err) {
          if (signal.aborted) break;
          ctx.logger.warn({ err, agentId: info.agentId, project: event.fullPath }, "cannot verify the agent's access to a pushed project");
          continue;
        }
        // An agent that may not read the project hears nothing of it (GitLab drops it silently).
        if (!allowed) continue;
        yield create(ReconcileProjectsResponseSchema, { project: { id: event.fullPath } });
        m?.notified.inc();
        m?.seenProjects.add(event.projectId);
        // GitLab KAS's usage events for the same send (server/factory.go).
        ctx.usage.inc("flux_git_push_notifications_total");
        ctx.usage.addUnique("flux_git_push_notified_unique_projects", event.projectId);
      }
      signal.throwIfAborted();
    } finally {
      signal.removeEventListener("abort", onAbort);
      queue.close();
      call.release();
    }
  }

  return {
    name: "flux",
    agentServices: [GitLabFlux],
    registerAgentServices(router, ctx) {
      metricsFor(ctx.metrics);
      router.service(GitLabFlux, {
        reconcileProjects: (req: ReconcileProjectsRequest, hctx: HandlerContext) => reconcileProjects(req, hctx, ctx),
      });
    },
  };
}
