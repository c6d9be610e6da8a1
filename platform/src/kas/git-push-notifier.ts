import { createClient, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import pino, { type Logger } from "pino";
import { KAS_JWT_AUDIENCE, signJwt } from "@kasbridge/sdk/auth";
import { Notifications } from "@kasbridge/sdk/gen/gitlab/agent/notifications/rpc/rpc_pb";
import { PLATFORM_JWT_ISSUER } from "@kasbridge/sdk/kas";
import { Backoff, sleep } from "@kasbridge/sdk/util";
import type { PushEvent } from "../git/push-events.js";

export interface GitPushNotifierOptions {
  /** KAS's internal API, e.g. "grpc://127.0.0.1:8153" (GitLab's `gitlab_kas.internal_url`); grpcs:// for TLS. */
  kasInternalUrl: string;
  /** The secret KAS checks the platform's JWTs with (`.gitlab_kas_secret`, decoded). */
  jwtSecret: Uint8Array;
  /** Full path of a project by id; undefined when it is gone (nothing is sent). */
  projectPath(projectId: number): Promise<string | undefined>;
  /** Attempts per push before it is given up (logged). Default 5 (GitLab's worker retries too). */
  maxAttempts?: number;
  /** Timeout of one call. Default 10 000 ms. */
  callTimeoutMs?: number;
  /** CA for grpcs:// (default: the system's). */
  ca?: string | Buffer;
  logger?: Logger;
}

/** The notifier's state for one project: one call at a time, pushes meanwhile coalesce into one more. */
interface ProjectState {
  again: boolean;
}

export interface GitPushNotifier {
  /** Queues a notification for a pushed project (what `repositories.onPush` delivers). */
  pushed(event: Pick<PushEvent, "projectId">): void;
  /** Notifications sent successfully so far (tests, metrics). */
  readonly sent: number;
  /** Stops retrying, cancels calls in flight and closes the connection to KAS. */
  close(): Promise<void>;
}

/**
 * The platform's side of push notifications, as GitLab's Rails does it (`NotifyGitPushWorker`,
 * deduplicated until executed): after a push to a project, one unary
 * `gitlab.agent.notifications.rpc.Notifications/GitPushEvent` call to KAS's internal API with a
 * JWT (aud gitlab-kas). KAS publishes it to every replica. Several pushes to a project while a
 * call is under way make one more call, not one each; failures are retried with backoff.
 */
export function createGitPushNotifier(options: GitPushNotifierOptions): GitPushNotifier {
  const logger = options.logger ?? pino({ level: "silent" });
  const maxAttempts = options.maxAttempts ?? 5;
  const baseUrl = options.kasInternalUrl.replace(/^grpc:/, "http:").replace(/^grpcs:/, "https:");
  const sessions = new Http2SessionManager(baseUrl, undefined, options.ca ? { ca: options.ca } : undefined);
  let cached: { token: string; until: number } | undefined;
  const jwt: Interceptor = (next) => async (req) => {
    const now = Date.now();
    if (!cached || cached.until <= now) {
      cached = { token: await signJwt(options.jwtSecret, { issuer: PLATFORM_JWT_ISSUER, audience: KAS_JWT_AUDIENCE }), until: now + 10_000 };
    }
    req.header.set("authorization", `Bearer ${cached.token}`);
    return next(req);
  };
  const client = createClient(Notifications, createGrpcTransport({ baseUrl, sessionManager: sessions, interceptors: [jwt] }));
  const closing = new AbortController();
  const projects = new Map<number, ProjectState>();
  const running = new Set<Promise<void>>();
  let sent = 0;

  async function notify(projectId: number, state: ProjectState): Promise<void> {
    try {
      do {
        state.again = false;
        const fullPath = await options.projectPath(projectId).catch((err: unknown) => {
          logger.warn({ err, projectId }, "cannot read the pushed project; KAS is not notified");
          return undefined;
        });
        if (fullPath === undefined) continue;
        const backoff = new Backoff({ initialMs: 500, maxMs: 10_000 });
        for (let attempt = 1; !closing.signal.aborted; attempt++) {
          try {
            await client.gitPushEvent(
              { event: { project: { id: BigInt(projectId), fullPath } } },
              { signal: closing.signal, timeoutMs: options.callTimeoutMs ?? 10_000 },
            );
            sent++;
            logger.debug({ projectId, fullPath }, "KAS notified of a git push");
            break;
          } catch (err) {
            if (closing.signal.aborted) return;
            if (attempt >= maxAttempts) {
              logger.error({ err, projectId, attempts: attempt }, "cannot notify KAS of a git push; giving up");
              break;
            }
            const delay = backoff.nextDelayMs();
            logger.warn({ err, projectId, retryInMs: delay }, "cannot notify KAS of a git push; retrying");
            await sleep(delay, closing.signal);
          }
        }
      } while (state.again && !closing.signal.aborted);
    } finally {
      projects.delete(projectId);
    }
  }

  return {
    pushed({ projectId }) {
      if (closing.signal.aborted) return;
      const existing = projects.get(projectId);
      if (existing) {
        existing.again = true;
        return;
      }
      const state: ProjectState = { again: false };
      projects.set(projectId, state);
      const run = notify(projectId, state);
      running.add(run);
      void run.finally(() => running.delete(run));
    },
    get sent() {
      return sent;
    },
    async close() {
      closing.abort();
      await Promise.allSettled([...running]);
      sessions.abort();
    },
  };
}
