import { create } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import { createClient, type Transport } from "@connectrpc/connect";
import type { Logger } from "pino";
import { Gitops } from "../../../gen/gitlab/agent/gitops/rpc/rpc_pb.js";
import { GitopsStatusService, ManifestProjectStatusSchema } from "../../../gen/kasbridge/gitops/v1/sync_status_pb.js";
import type { KubeHttp } from "../../../agent/kube/kube-http.js";
import type { ResourceMapper } from "../../../agent/kube/resource-mapper.js";
import { Backoff, sleep } from "../../../util/backoff.js";
import { ManifestApplier, type ObjectResult, type SyncOutcome } from "./applier.js";
import { Inventory } from "./inventory.js";
import { ManifestsInvalidError, decodeManifests } from "./manifest-decoder.js";
import type { ManifestProjectSettings } from "./manifest-project.js";

/** One commit's manifests as KAS sent them. */
export interface ManifestCommit {
  commitId: string;
  projectId: bigint;
  files: Array<{ source: string; data: Uint8Array }>;
}

export interface ManifestWorkerOptions {
  settings: ManifestProjectSettings;
  agentId: bigint;
  kube: KubeHttp;
  mapper: ResourceMapper;
  transport: Transport;
  logger: Logger;
  /** Called after each sync (tests, metrics). */
  onSync?(commit: ManifestCommit, outcome: SyncOutcome, durationMs: number): void;
  /** A successful sync is applied again after this long (drift repair). Default 300 000 ms (GitLab). */
  reapplyIntervalMs?: number;
  /** Retry of a failed sync. Default 10 s -> 1 min (GitLab). */
  retry?: { initialMs: number; maxMs: number };
}

/**
 * One manifest project of the agent (GitLab's manifestops worker): keeps a
 * GetObjectsToSynchronize stream to KAS for the project's ref and paths, and applies each commit it
 * receives (newest wins), again every 5 minutes, and again after a failure with backoff. Each
 * sync's result is reported to KAS (kasbridge's GitopsStatusService).
 */
export class ManifestWorker {
  private latest: ManifestCommit | undefined;
  private wakeApplier: (() => void) | undefined;
  private superseded = new AbortController();
  private status = create(ManifestProjectStatusSchema);

  constructor(private readonly options: ManifestWorkerOptions) {
    this.status.project = options.settings.project;
    this.status.dryRun = options.settings.dryRunStrategy !== "none";
  }

  async run(signal: AbortSignal): Promise<void> {
    const onAbort = () => this.wakeApplier?.();
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      await Promise.all([this.receive(signal), this.applyLoop(signal)]);
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  /** The stream: each complete commit (header, objects, trailer) becomes `latest`. */
  private async receive(signal: AbortSignal): Promise<void> {
    const { settings, logger } = this.options;
    const client = createClient(Gitops, this.options.transport);
    const backoff = new Backoff({ initialMs: 2_000, maxMs: 60_000 });
    while (!signal.aborted) {
      try {
        const stream = client.getObjectsToSynchronize(
          { projectId: settings.project, ref: { ref: settings.ref }, commitId: this.latest?.commitId ?? "", paths: settings.paths.map((path) => ({ path })) },
          { signal },
        );
        let pending: ManifestCommit | undefined;
        for await (const res of stream) {
          const m = res.message;
          if (m.case === "header") {
            if (pending) throw new Error("protocol error: a header before the previous commit's trailer");
            pending = { commitId: m.value.commitId, projectId: m.value.projectId, files: [] };
          } else if (m.case === "object") {
            if (!pending) throw new Error("protocol error: an object before the header");
            const last = pending.files[pending.files.length - 1];
            if (last && last.source === m.value.source) last.data = concat(last.data, m.value.data);
            else pending.files.push({ source: m.value.source, data: m.value.data });
          } else if (m.case === "trailer") {
            if (!pending) throw new Error("protocol error: a trailer before the header");
            this.deliver(pending);
            pending = undefined;
            backoff.reset();
          } else {
            throw new Error("protocol error: an empty message");
          }
        }
        // KAS ended the stream (restarting): reopen.
      } catch (err) {
        if (signal.aborted) return;
        const delay = backoff.nextDelayMs();
        logger.warn({ err, project: settings.project, retryInMs: delay }, "GetObjectsToSynchronize failed");
        await sleep(delay, signal);
      }
    }
  }

  private deliver(commit: ManifestCommit): void {
    this.options.logger.info({ project: this.options.settings.project, commit: commit.commitId, files: commit.files.length }, "manifests received");
    this.latest = commit;
    this.status.commitSeen = commit.commitId;
    this.superseded.abort();
    const wake = this.wakeApplier;
    this.wakeApplier = undefined;
    wake?.();
  }

  private async applyLoop(signal: AbortSignal): Promise<void> {
    const retry = new Backoff({ ...(this.options.retry ?? { initialMs: 10_000, maxMs: 60_000 }), factor: 2 });
    let applied: ManifestCommit | undefined;
    let waitMs: number | undefined;
    while (!signal.aborted) {
      if (this.latest === applied) {
        // Nothing new: wait for a commit, or for the time to apply again (drift repair, retry).
        const timeoutMs = waitMs;
        await new Promise<void>((resolve) => {
          const timer = timeoutMs === undefined ? undefined : setTimeout(resolve, timeoutMs);
          this.wakeApplier = () => {
            clearTimeout(timer);
            resolve();
          };
          if (signal.aborted) this.wakeApplier();
        });
        this.wakeApplier = undefined;
        if (signal.aborted) return;
      }
      waitMs = undefined;
      const commit = this.latest;
      if (!commit) continue;
      this.superseded = new AbortController();
      const outcome = await this.sync(commit, signal);
      if (signal.aborted) return;
      applied = commit;
      if (outcome.error === undefined) {
        retry.reset();
        waitMs = this.options.reapplyIntervalMs ?? 300_000;
      } else {
        // Invalid manifests stay invalid: wait for the next commit (or the drift-repair interval).
        waitMs = outcome.invalid ? (this.options.reapplyIntervalMs ?? 300_000) : retry.nextDelayMs();
      }
    }
  }

  private async sync(commit: ManifestCommit, signal: AbortSignal): Promise<SyncOutcome & { invalid?: boolean }> {
    const { settings, logger } = this.options;
    const started = performance.now();
    const inventory = new Inventory(this.options.kube, this.options.agentId, commit.projectId, settings.defaultNamespace);
    const applier = new ManifestApplier(this.options.kube, this.options.mapper, inventory, logger);
    let outcome: SyncOutcome & { invalid?: boolean };
    try {
      outcome = await applier.sync(decodeManifests(commit.files), settings, signal, this.superseded.signal);
    } catch (err) {
      if (signal.aborted) return { objects: [] };
      const invalid = err instanceof ManifestsInvalidError;
      outcome = { objects: this.status.objects.map((o) => ({ ...o }) as ObjectResult), error: (err as Error).message, invalid };
    }
    const durationMs = performance.now() - started;
    if (outcome.error === undefined) {
      this.status.commitApplied = commit.commitId;
      logger.info({ project: settings.project, commit: commit.commitId, durationMs: Math.round(durationMs) }, "manifests synchronized");
    } else {
      logger.error({ project: settings.project, commit: commit.commitId, error: outcome.error }, "manifest sync failed");
    }
    this.status.lastError = outcome.error ?? "";
    this.status.objects = outcome.objects.map((o) => ({ ...o, $typeName: "kasbridge.gitops.v1.ObjectStatus" }));
    this.status.updatedAt = timestampNow();
    this.options.onSync?.(commit, outcome, durationMs);
    await this.report(signal);
    return outcome;
  }

  /** Tells KAS how the sync went; a KAS that does not take reports (GitLab's) is fine. */
  private async report(signal: AbortSignal): Promise<void> {
    try {
      await createClient(GitopsStatusService, this.options.transport).reportSyncStatus({ status: this.status }, { signal, timeoutMs: 10_000 });
    } catch (err) {
      if (!signal.aborted) this.options.logger.debug({ err }, "cannot report the GitOps status");
    }
  }
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.byteLength + b.byteLength);
  out.set(a);
  out.set(b, a.byteLength);
  return out;
}
