/**
 * The workspace proxy's questions to the platform (`authorizeWorkspaceAccess`), answered briefly
 * from a cache, and the requests each answer let in: when the platform revokes the personal access
 * token behind a credential or blocks its user, the cached answers go and the running requests
 * (WebSockets) end; long-running ones are also asked about again every `reauthorizeIntervalMs`.
 */
import { createHash } from "node:crypto";
import {
  PlatformError,
  type PlatformClient,
  type TokenRevocation,
  type WorkspaceAccessAnswer,
  type WorkspaceAccessType,
} from "../../../platform-client/platform-client.js";
import { hostName } from "../workspace-host.js";

/** A proxy refusal: the HTTP status and the message the caller reads. */
export class WorkspaceProxyError extends Error {
  override readonly name = "WorkspaceProxyError";
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export interface WorkspaceCredential {
  accessType: WorkspaceAccessType;
  accessKey: string;
}

export interface WorkspaceAuthorizerOptions {
  platform: PlatformClient;
  /** How long an answer is reused. Default 5 000 ms. */
  cacheTtlMs?: number;
  /** How often a running request's credential is asked about again. Default 60 000 ms; 0: never. */
  reauthorizeIntervalMs?: number;
}

interface Entry {
  answer: WorkspaceAccessAnswer;
  until: number;
}

interface Running {
  host: string;
  credential: WorkspaceCredential;
  answer: WorkspaceAccessAnswer;
  end(reason: WorkspaceProxyError): void;
}

export class WorkspaceAuthorizer {
  private readonly cache = new Map<string, Entry>();
  private readonly running = new Set<Running>();
  private readonly stop = new AbortController();
  private readonly timer: NodeJS.Timeout | undefined;
  private readonly cacheTtlMs: number;

  constructor(private readonly options: WorkspaceAuthorizerOptions) {
    this.cacheTtlMs = options.cacheTtlMs ?? 5_000;
    options.platform.watchTokenRevocations((r) => this.revoked(r), this.stop.signal);
    const interval = options.reauthorizeIntervalMs ?? 60_000;
    if (interval > 0) {
      this.timer = setInterval(() => void this.reauthorizeRunning(), interval);
      this.timer.unref();
    }
  }

  /** The platform's answer for `credential` on `host`; throws WorkspaceProxyError. Callback tokens are never cached (each works once). */
  async authorize(host: string, credential: WorkspaceCredential, signal?: AbortSignal): Promise<WorkspaceAccessAnswer> {
    const cacheable = credential.accessType !== "workspace_callback";
    const key = cacheKey(host, credential);
    const hit = cacheable ? this.cache.get(key) : undefined;
    if (hit && hit.until > Date.now()) return hit.answer;
    if (!this.options.platform.authorizeWorkspaceAccess) throw new WorkspaceProxyError(501, "the platform does not offer workspace access");
    let answer: WorkspaceAccessAnswer;
    try {
      answer = await this.options.platform.authorizeWorkspaceAccess({ host: hostName(host), ...credential }, signal);
    } catch (err) {
      this.cache.delete(key);
      throw refusal(err);
    }
    if (cacheable) {
      if (this.cache.size >= 10_000) this.pruneCache();
      this.cache.set(key, { answer, until: Date.now() + this.cacheTtlMs });
    }
    return answer;
  }

  /** Watches a running request: `end` is called when its credential stops working. Returns the release. */
  track(host: string, credential: WorkspaceCredential, answer: WorkspaceAccessAnswer, end: (reason: WorkspaceProxyError) => void): () => void {
    const entry: Running = { host, credential, answer, end };
    this.running.add(entry);
    return () => this.running.delete(entry);
  }

  close(): void {
    this.stop.abort();
    if (this.timer) clearInterval(this.timer);
    this.cache.clear();
  }

  private revoked(r: TokenRevocation): void {
    const hit = (a: WorkspaceAccessAnswer) =>
      (r.kind === "personal_access_token" && a.personalAccessToken.id === r.tokenId) || (r.kind === "user" && a.user.id === r.userId);
    if (r.kind !== "personal_access_token" && r.kind !== "user") return;
    for (const [key, entry] of this.cache) if (hit(entry.answer)) this.cache.delete(key);
    for (const run of [...this.running]) {
      if (hit(run.answer)) {
        this.running.delete(run);
        run.end(new WorkspaceProxyError(401, "the credential was revoked"));
      }
    }
  }

  /** Asks again about every running request (the cache answers for credentials asked about lately). */
  private async reauthorizeRunning(): Promise<void> {
    for (const run of [...this.running]) {
      try {
        const answer = await this.authorize(run.host, run.credential, this.stop.signal);
        if (answer.workspace.actualState !== "Running" || answer.user.id !== run.answer.user.id) {
          throw new WorkspaceProxyError(503, `workspace ${answer.workspace.name} is ${answer.workspace.actualState}`);
        }
      } catch (err) {
        if (this.stop.signal.aborted) return;
        // A platform outage ends nothing: only an answer that refuses does.
        if (err instanceof WorkspaceProxyError && err.status !== 502) {
          this.running.delete(run);
          run.end(err);
        }
      }
    }
  }

  private pruneCache(): void {
    const now = Date.now();
    for (const [key, entry] of this.cache) if (entry.until <= now) this.cache.delete(key);
    // Still full: the oldest go (a Map iterates in insertion order).
    for (const key of this.cache.keys()) {
      if (this.cache.size < 10_000) break;
      this.cache.delete(key);
    }
  }
}

/** Never the credential itself as a key: its SHA-256, with the host and kind. */
function cacheKey(host: string, c: WorkspaceCredential): string {
  return createHash("sha256").update(`${c.accessType}\0${hostName(host)}\0${c.accessKey}`).digest("base64url");
}

function refusal(err: unknown): WorkspaceProxyError {
  if (err instanceof WorkspaceProxyError) return err;
  if (err instanceof PlatformError) {
    switch (err.kind) {
      case "unauthenticated":
        return new WorkspaceProxyError(401, "unauthorized: the credential is not valid (log in again)");
      case "forbidden":
        return new WorkspaceProxyError(403, "forbidden: the token lacks the api scope");
      case "not_found":
        return new WorkspaceProxyError(404, "no such workspace port, or it is not yours");
      default:
        return new WorkspaceProxyError(502, `the platform cannot be reached: ${err.message}`);
    }
  }
  return new WorkspaceProxyError(502, `the platform cannot be reached: ${(err as Error).message}`);
}
