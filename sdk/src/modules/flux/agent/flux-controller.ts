import { createClient, type Transport } from "@connectrpc/connect";
import type { Logger } from "pino";
import { GitLabFlux } from "../../../gen/gitlab/agent/flux/rpc/rpc_pb.js";
import { isConflict, isNotFound, type KubeHttp } from "../../../agent/kube/kube-http.js";
import { ObjectCache, keyOf } from "../../../agent/kube/object-cache.js";
import { WorkQueue } from "../../../agent/kube/work-queue.js";
import { Backoff, sleep } from "../../../util/backoff.js";
import {
  AGENT_ID_ANNOTATION,
  PROJECT_ANNOTATION,
  legacySecretName,
  owningRepositoryKey,
  projectPathOf,
  receiver,
  receiverSecret,
  type KubeObject,
} from "./flux-objects.js";
import type { ReconcileTrigger } from "./reconcile-trigger.js";

/** The agent field manager of every object agentk applies (GitLab's). */
export const FIELD_MANAGER = "agentk";

export interface FluxControllerOptions {
  kube: KubeHttp;
  transport: Transport;
  agentId: bigint;
  /** Host name of the platform (`gitlab_external_url`): GitRepositories on other hosts are left alone. */
  gitlabHostname: string;
  trigger: ReconcileTrigger;
  logger: Logger;
  /** Quiet time after a Receiver change before the project set is sent again. Default 10 000 ms (GitLab). */
  projectsDebounceMs?: number;
  /** Backoff of the ReconcileProjects stream. Default 10 s -> 5 min (GitLab). */
  streamBackoff?: { initialMs: number; maxMs: number };
}

const GIT_REPOSITORIES_PATH = "/apis/source.toolkit.fluxcd.io/v1/gitrepositories";
const RECEIVERS_PATH = "/apis/notification.toolkit.fluxcd.io/v1/receivers";

/**
 * The Flux module's work while the Flux CRDs exist (GitLab's flux agent module): for each
 * GitRepository on the platform's host it applies a webhook Secret and a generic Receiver; it
 * keeps one `ReconcileProjects` stream to KAS for the projects its Receivers name, and when KAS
 * reports a push to one of them it POSTs the webhook path Flux put in each such Receiver's status,
 * so Flux fetches the new commit at once instead of at its next poll.
 */
export async function runFluxController(options: FluxControllerOptions, signal: AbortSignal): Promise<void> {
  const { kube, logger } = options;
  const queue = new WorkQueue("GitRepositories", (key, s) => reconcileRepository(key, s), logger);
  const repositories = new ObjectCache<KubeObject>(kube, GIT_REPOSITORIES_PATH, { upsert: (repo) => queue.add(keyOf(repo)) }, logger);
  const projects = new ProjectsStream(options, () => receivers.list(), logger);
  const onReceiver = (object: KubeObject) => {
    const owner = owningRepositoryKey(object);
    if (owner) queue.add(owner);
    projects.receiversChanged();
  };
  const receivers = new ObjectCache<KubeObject>(kube, RECEIVERS_PATH, { upsert: onReceiver, deleted: onReceiver, synced: () => projects.receiversChanged() }, logger);

  async function reconcileRepository(key: string, s: AbortSignal): Promise<void> {
    const repo = repositories.get(key);
    if (!repo) return; // deleted: its Secret and Receiver go with it (owner references)
    const projectPath = projectPathOf(repo.spec?.url, options.gitlabHostname);
    if (!projectPath) return;
    const secret = receiverSecret(repo, options.agentId);
    await apply(kube, `/api/v1/namespaces/${enc(secret.metadata.namespace)}/secrets/${enc(secret.metadata.name)}`, secret, s);
    await deleteLegacySecret(repo, s);
    const rcv = receiver(repo, options.agentId, projectPath);
    await apply(kube, `${RECEIVERS_PATH.replace("/receivers", "")}/namespaces/${enc(rcv.metadata.namespace)}/receivers/${enc(rcv.metadata.name)}`, rcv, s);
    logger.debug({ gitRepository: key, project: projectPath, receiver: rcv.metadata.name }, "Flux receiver applied");
  }

  /** Agents before GitLab 16.3 named the Secret `gitlab-<repo>`: it goes, if this agent made it. */
  async function deleteLegacySecret(repo: KubeObject, s: AbortSignal): Promise<void> {
    const path = `/api/v1/namespaces/${enc(repo.metadata!.namespace!)}/secrets/${enc(legacySecretName(repo.metadata!.name!))}`;
    try {
      const old = await kube.json<KubeObject>("GET", path, { signal: s });
      if (old.metadata?.annotations?.[AGENT_ID_ANNOTATION] !== String(options.agentId)) return;
      await kube.json("DELETE", path, { signal: s });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }

  const runs = [repositories.run(signal), receivers.run(signal), queue.run(signal), projects.run(signal)];
  await Promise.all(runs);
}

/** Server-side apply with agentk's field manager, forcing conflicts; a Conflict answer is ignored (GitLab). */
async function apply(kube: KubeHttp, path: string, object: unknown, signal: AbortSignal): Promise<void> {
  try {
    await kube.json("PATCH", path, {
      query: { fieldManager: FIELD_MANAGER, force: "true" },
      body: object,
      contentType: "application/apply-patch+yaml",
      signal,
    });
  } catch (err) {
    if (!isConflict(err)) throw err;
  }
}

const enc = encodeURIComponent;

/**
 * The `ReconcileProjects` stream: reopened (after a quiet time) whenever the set of projects the
 * Receivers name changes; each push it reports triggers those Receivers' webhooks.
 */
class ProjectsStream {
  private current = "";
  private wanted: string[] = [];
  private debounce: NodeJS.Timeout | undefined;
  private restart: (() => void) | undefined;
  private streamAbort: AbortController | undefined;

  constructor(
    private readonly options: FluxControllerOptions,
    private readonly receivers: () => KubeObject[],
    private readonly logger: Logger,
  ) {}

  receiversChanged(): void {
    clearTimeout(this.debounce);
    this.debounce = setTimeout(() => this.update(), this.options.projectsDebounceMs ?? 10_000);
  }

  private update(): void {
    const projects = [...new Set(this.receivers().map((r) => r.metadata?.annotations?.[PROJECT_ANNOTATION]).filter((p): p is string => !!p))].sort();
    const id = projects.join("\n");
    if (id === this.current) return;
    this.current = id;
    this.wanted = projects;
    this.streamAbort?.abort();
    this.restart?.();
  }

  async run(signal: AbortSignal): Promise<void> {
    const client = createClient(GitLabFlux, this.options.transport);
    const backoff = new Backoff({ ...(this.options.streamBackoff ?? { initialMs: 10_000, maxMs: 300_000 }), factor: 2, jitter: 1 });
    const onAbort = () => {
      clearTimeout(this.debounce);
      this.streamAbort?.abort();
      this.restart?.();
    };
    signal.addEventListener("abort", onAbort, { once: true });
    try {
      while (!signal.aborted) {
        const projects = this.wanted;
        if (projects.length === 0) {
          await new Promise<void>((resolve) => (this.restart = resolve));
          continue;
        }
        const streamAbort = (this.streamAbort = new AbortController());
        const streamSignal = AbortSignal.any([signal, streamAbort.signal]);
        let openedAt = Date.now();
        try {
          this.logger.info({ projects }, "watching projects for Flux reconciliation");
          openedAt = Date.now();
          for await (const res of client.reconcileProjects({ project: projects.map((id) => ({ id })) }, { signal: streamSignal })) {
            const path = res.project?.id;
            if (path) void this.triggerReceivers(path, streamSignal);
          }
          // KAS ended the stream (e.g. it is restarting): reopen at once.
        } catch (err) {
          if (streamSignal.aborted) continue;
          // GitLab resets the backoff after 10 min of a healthy stream.
          if (Date.now() - openedAt > 600_000) backoff.reset();
          const delay = backoff.nextDelayMs();
          this.logger.warn({ err, retryInMs: delay }, "ReconcileProjects stream failed");
          await sleep(delay, streamSignal);
        }
      }
    } finally {
      signal.removeEventListener("abort", onAbort);
      clearTimeout(this.debounce);
    }
  }

  private async triggerReceivers(projectPath: string, signal: AbortSignal): Promise<void> {
    for (const r of this.receivers()) {
      if (r.metadata?.annotations?.[PROJECT_ANNOTATION] !== projectPath) continue;
      const webhookPath = r.status?.webhookPath;
      if (typeof webhookPath !== "string" || webhookPath === "") continue;
      try {
        const status = await this.options.trigger(webhookPath, signal);
        this.logger.info({ project: projectPath, receiver: keyOf(r), status }, "Flux reconciliation triggered");
      } catch (err) {
        if (signal.aborted) return;
        this.logger.error({ err, project: projectPath, receiver: keyOf(r) }, "cannot reach Flux's webhook receiver");
      }
    }
  }
}
