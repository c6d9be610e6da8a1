import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, type HandlerContext } from "@connectrpc/connect";
import { Counter, Histogram, type Registry } from "prom-client";
import {
  Gitops,
  ObjectsToSynchronizeResponseSchema,
  type ObjectsToSynchronizeRequest,
  type ObjectsToSynchronizeResponse,
} from "../../../gen/gitlab/agent/gitops/rpc/rpc_pb.js";
import { GitopsStatusService, type ReportSyncStatusRequest } from "../../../gen/kasbridge/gitops/v1/sync_status_pb.js";
import { PlatformError, RepositoryFileTooLargeError, type PlatformClient, type ProjectInfo } from "../../../platform-client/platform-client.js";
import { bearerToken } from "../../../auth/bearer.js";
import { openAgentCall } from "../../../kas/agent-call.js";
import type { KasModule, KasModuleContext } from "../../../kas/kas-module.js";
import type { GitPushEvents } from "../../notifications/server/git-push-events.js";
import { GlobSyntaxError, globMatcher, inHiddenDirectory } from "./glob.js";

export interface GitopsServerModuleOptions {
  platform: PlatformClient;
  /** The push events the notifications module publishes: a push to a project re-reads it at once. */
  events: GitPushEvents;
  /** How often a project is re-read without a push. Default 300 000 ms (GitLab's `agent.gitops.poll_period`). */
  pollPeriodMs?: number;
  /** Largest manifest file. Default 5 MiB (GitLab's `max_manifest_file_size`). */
  maxManifestFileBytes?: number;
  /** Largest sum of a commit's manifest files. Default 20 MiB (`max_total_manifest_file_size`). */
  maxTotalManifestFileBytes?: number;
  /** Most `paths` entries in a request. Default 100 (`max_number_of_paths`). */
  maxNumberOfPaths?: number;
  /** Most manifest files in a commit. Default 1000 (`max_number_of_files`). */
  maxNumberOfFiles?: number;
}

/** Objects are sent in pieces of at most this size (GitLab's). */
export const MANIFEST_CHUNK_BYTES = 128 * 1024;

/**
 * KAS half of GitLab's built-in GitOps (`gitlab.agent.gitops.rpc.Gitops/GetObjectsToSynchronize`):
 * sends the agent the manifest files of a project at the ref it names (header, objects in chunks
 * of 128 KiB, trailer), and again whenever the ref moves: at once after a push to the project
 * (the platform's GitPushEvent), and at the latest every poll period. The agent may read the
 * project (`project_info` with its token), so the cluster never needs git credentials. Also serves
 * kasbridge's GitopsStatusService, through which agents report how each sync went.
 */
export function gitopsServerModule(options: GitopsServerModuleOptions): KasModule {
  const { platform } = options;
  const pollPeriodMs = options.pollPeriodMs ?? 300_000;
  const maxFileBytes = options.maxManifestFileBytes ?? 5 * 1024 * 1024;
  const maxTotalBytes = options.maxTotalManifestFileBytes ?? 20 * 1024 * 1024;
  const maxPaths = options.maxNumberOfPaths ?? 100;
  const maxFiles = options.maxNumberOfFiles ?? 1000;
  let metrics: { syncs: Counter; failures: Counter<"code">; readSeconds: Histogram } | undefined;

  function metricsFor(registry: Registry | undefined) {
    if (!registry || metrics) return metrics;
    metrics = {
      syncs: new Counter({ name: "gitops_sync_total", help: "Manifest commits sent to agents (GetObjectsToSynchronize)", registers: [registry] }),
      failures: new Counter({
        name: "gitops_sync_failures_total",
        help: "GetObjectsToSynchronize calls that ended with an error, by gRPC code",
        labelNames: ["code"] as const,
        registers: [registry],
      }),
      readSeconds: new Histogram({
        name: "gitops_manifest_read_duration_seconds",
        help: "Time to read and send one commit's manifests to an agent",
        buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
        registers: [registry],
      }),
    };
    return metrics;
  }

  async function* getObjectsToSynchronize(req: ObjectsToSynchronizeRequest, hctx: HandlerContext, ctx: KasModuleContext): AsyncIterable<ObjectsToSynchronizeResponse> {
    const m = metricsFor(ctx.metrics);
    try {
      yield* synchronize(req, hctx, ctx);
    } catch (error) {
      const ce = ConnectError.from(error);
      if (ce.code !== Code.Canceled) m?.failures.inc({ code: Code[ce.code] });
      throw ce;
    }
  }

  async function* synchronize(req: ObjectsToSynchronizeRequest, hctx: HandlerContext, ctx: KasModuleContext): AsyncIterable<ObjectsToSynchronizeResponse> {
    const matchers = validate(req);
    const call = await openAgentCall(ctx, hctx);
    const { agent: info, token, signal } = call;
    try {
      const project = await platformCall(() => platform.getProjectInfo!(token, req.projectId, signal), "project_info");
      const ref = req.ref?.ref;
      const revision =
        ref?.case === "tag" ? `refs/tags/${ref.value}` : ref?.case === "branch" ? `refs/heads/${ref.value}` : ref?.case === "commit" ? ref.value : "HEAD";
      // A push to the project wakes the loop; so does the poll period.
      let wake: (() => void) | undefined;
      let pushed = false;
      options.events.subscribe((event) => {
        if (event.fullPath !== project.fullPath && event.projectId !== project.projectId) return;
        pushed = true;
        wake?.();
      }, signal);
      let lastCommit = req.commitId;
      while (!signal.aborted) {
        pushed = false;
        const commit = await platformCall(() => platform.resolveRepositoryRevision!(project.projectId, revision, signal), "resolve revision");
        if (commit === undefined) {
          // An empty repository is polled until it has commits; a missing ref of one that has is an error.
          const head = ref === undefined ? undefined : await platformCall(() => platform.resolveRepositoryRevision!(project.projectId, "HEAD", signal), "resolve HEAD");
          if (head !== undefined) throw new ConnectError(`ref ${revision} not found in project ${req.projectId}`, Code.NotFound);
        } else if (commit !== lastCommit) {
          const started = performance.now();
          yield* manifests(project, commit, matchers, signal);
          lastCommit = commit;
          metricsFor(ctx.metrics)?.syncs.inc();
          ctx.usage.inc("gitops_sync"); // GitLab KAS's usage event, once per commit sent
          metricsFor(ctx.metrics)?.readSeconds.observe((performance.now() - started) / 1000);
          ctx.logger.debug({ agentId: info.agentId, project: project.fullPath, commit }, "manifests sent");
        }
        if (pushed) continue;
        await new Promise<void>((resolve) => {
          const done = () => {
            clearTimeout(timer);
            signal.removeEventListener("abort", done);
            wake = undefined;
            resolve();
          };
          const timer = setTimeout(done, pollPeriodMs);
          wake = done;
          signal.addEventListener("abort", done, { once: true });
        });
      }
      signal.throwIfAborted();
    } finally {
      call.release();
    }
  }

  function validate(req: ObjectsToSynchronizeRequest): Array<{ match(path: string): boolean; glob?: string; file?: string }> {
    if (req.projectId === "") throw new ConnectError("invalid ObjectsToSynchronizeRequest.ProjectId: value length must be at least 1 runes", Code.InvalidArgument);
    if (req.paths.length === 0) throw new ConnectError("invalid ObjectsToSynchronizeRequest.Paths: value must contain at least 1 item(s)", Code.InvalidArgument);
    if (req.paths.length > maxPaths) throw new ConnectError(`too many paths: ${req.paths.length} (at most ${maxPaths})`, Code.InvalidArgument);
    return req.paths.map((p, i) => {
      if (p.path.case === "glob") {
        try {
          return { match: globMatcher(p.path.value), glob: p.path.value };
        } catch (err) {
          throw new ConnectError(`paths[${i}]: ${err instanceof GlobSyntaxError ? err.message : String(err)}`, Code.FailedPrecondition);
        }
      }
      if (p.path.case === "file") {
        const file = p.path.value;
        return { match: (path: string) => path === file, file };
      }
      throw new ConnectError(`invalid PathCF at paths[${i}]: one of glob or file is required`, Code.InvalidArgument);
    });
  }

  async function* manifests(
    project: ProjectInfo,
    commit: string,
    matchers: ReturnType<typeof validate>,
    signal: AbortSignal,
  ): AsyncIterable<ObjectsToSynchronizeResponse> {
    const all = await platformCall(() => platform.listRepositoryFiles!(project.projectId, commit, signal), "list files");
    const selected: string[] = [];
    for (const path of all) {
      if (inHiddenDirectory(path)) continue;
      const hits = matchers.filter((m) => m.match(path));
      if (hits.length === 0) continue;
      const globs = hits.filter((h) => h.glob !== undefined);
      if (globs.length > 1) throw new ConnectError(`path ${path} is matched by more than one glob (${globs.map((g) => g.glob).join(", ")})`, Code.FailedPrecondition);
      selected.push(path);
    }
    for (const m of matchers) {
      if (m.file !== undefined && !selected.includes(m.file)) throw new ConnectError(`file ${m.file} not found at ${commit}`, Code.FailedPrecondition);
    }
    if (selected.length > maxFiles) throw new ConnectError(`too many manifest files: ${selected.length} (at most ${maxFiles})`, Code.FailedPrecondition);
    yield create(ObjectsToSynchronizeResponseSchema, { message: { case: "header", value: { commitId: commit, projectId: BigInt(project.projectId) } } });
    let total = 0;
    for (const path of selected) {
      const limit = Math.min(maxFileBytes, maxTotalBytes - total);
      let data: Uint8Array | undefined;
      try {
        data = await platformCall(() => platform.readRepositoryFile!(project.projectId, commit, path, limit, signal), "read file");
      } catch (err) {
        if (!(err instanceof RepositoryFileTooLargeError)) throw err;
        const what = limit < maxFileBytes ? `the manifests exceed ${maxTotalBytes} bytes in total` : `file ${path} is larger than ${maxFileBytes} bytes`;
        throw new ConnectError(`${what} (commit ${commit})`, Code.FailedPrecondition);
      }
      if (!data) continue;
      total += data.byteLength;
      if (data.byteLength === 0) {
        yield create(ObjectsToSynchronizeResponseSchema, { message: { case: "object", value: { source: path, data } } });
        continue;
      }
      for (let offset = 0; offset < data.byteLength; offset += MANIFEST_CHUNK_BYTES) {
        const chunk = data.subarray(offset, offset + MANIFEST_CHUNK_BYTES);
        yield create(ObjectsToSynchronizeResponseSchema, { message: { case: "object", value: { source: path, data: chunk } } });
      }
    }
    yield create(ObjectsToSynchronizeResponseSchema, { message: { case: "trailer", value: {} } });
  }

  return {
    name: "gitops",
    agentServices: [Gitops, GitopsStatusService],
    registerAgentServices(router, ctx) {
      metricsFor(ctx.metrics);
      router.service(Gitops, {
        getObjectsToSynchronize: (req: ObjectsToSynchronizeRequest, hctx: HandlerContext) => getObjectsToSynchronize(req, hctx, ctx),
      });
      router.service(GitopsStatusService, {
        async reportSyncStatus(req: ReportSyncStatusRequest, hctx: HandlerContext) {
          await ctx.auth.authenticate(hctx.requestHeader, hctx.signal);
          if (!req.status || req.status.project === "") throw new ConnectError("status.project is required", Code.InvalidArgument);
          if (!platform.reportGitopsStatus) return {};
          const token = bearerToken(hctx.requestHeader.get("authorization"))!;
          await platformCall(() => platform.reportGitopsStatus!(token, req.status!, hctx.signal), "report GitOps status");
          return {};
        },
      });
    },
  };

  /** A platform call; its PlatformError becomes the gRPC code GitLab's KAS answers with. */
  async function platformCall<T>(call: () => Promise<T>, what: string): Promise<T> {
    if (!platform.getProjectInfo || !platform.resolveRepositoryRevision || !platform.listRepositoryFiles || !platform.readRepositoryFile) {
      throw new ConnectError("the platform client cannot read repositories: GitOps is unavailable", Code.Unimplemented);
    }
    try {
      return await call();
    } catch (err) {
      if (!(err instanceof PlatformError)) throw err;
      const code = { unauthenticated: Code.Unauthenticated, forbidden: Code.PermissionDenied, not_found: Code.NotFound, unavailable: Code.Unavailable }[err.kind];
      throw new ConnectError(`${what}: ${err.message}`, code);
    }
  }
}
