import { Code, ConnectError } from "@connectrpc/connect";
import { Counter } from "prom-client";
import { Notifications, type GitPushEventRequest } from "../../../gen/gitlab/agent/notifications/rpc/rpc_pb.js";
import { apiUnaryMethod } from "../../../grpc/api-unary-method.js";
import type { KasModule } from "../../../kas/kas-module.js";
import type { GitPushEvents } from "./git-push-events.js";

export interface NotificationsServerModuleOptions {
  /** Where accepted push events go (the Flux and GitOps modules subscribe to the same instance). */
  events: GitPushEvents;
}

/**
 * KAS half of `gitlab.agent.notifications.rpc.Notifications/GitPushEvent`: the platform (GitLab's
 * Rails `NotifyGitPushWorker`) tells KAS, on its internal API, that a project was pushed to; KAS
 * publishes the event to every replica. A publish failure is UNAVAILABLE, so the platform retries.
 */
export function notificationsServerModule(options: NotificationsServerModuleOptions): KasModule {
  return {
    name: "notifications",
    apiMethods(ctx) {
      const received = ctx.metrics
        ? new Counter({
            name: "git_push_events_received_total",
            help: "Git push events the platform sent to this KAS (Notifications/GitPushEvent), by outcome",
            labelNames: ["outcome"] as const,
            registers: [ctx.metrics],
          })
        : undefined;
      return [
        apiUnaryMethod({
          method: Notifications.method.gitPushEvent,
          async handle(request: GitPushEventRequest) {
            const project = validate(request);
            try {
              await options.events.publish(project);
            } catch (err) {
              received?.inc({ outcome: "unpublished" });
              ctx.logger.warn({ err, projectId: project.projectId }, "cannot publish a git push event");
              throw new ConnectError("failed to publish the git push event", Code.Unavailable);
            }
            received?.inc({ outcome: "published" });
            ctx.logger.debug(project, "git push event published");
            return {};
          },
        }),
      ];
    },
  };
}

/** GitLab's validation of GitPushEventRequest (event required, project id > 0, full_path set). */
function validate(request: GitPushEventRequest): { projectId: number; fullPath: string } {
  const project = request.event?.project;
  if (!request.event) throw new ConnectError("invalid GitPushEventRequest.Event: value is required", Code.InvalidArgument);
  if (!project) throw new ConnectError("invalid GitPushEvent.Project: value is required", Code.InvalidArgument);
  if (project.id <= 0n || project.id > BigInt(Number.MAX_SAFE_INTEGER)) {
    throw new ConnectError("invalid Project.Id: value must be greater than 0", Code.InvalidArgument);
  }
  if (project.fullPath.length === 0) throw new ConnectError("invalid Project.FullPath: value length must be at least 1 runes", Code.InvalidArgument);
  return { projectId: Number(project.id), fullPath: project.fullPath };
}
