import type { Logger } from "pino";
import { Backoff, sleep } from "../../util/backoff.js";
import { KubeApiError, type KubeHttp, type WatchEvent } from "./kube-http.js";

/** What the cache keeps of an object: enough to key it and tell versions apart. */
export interface CachedObject {
  metadata?: { name?: string; namespace?: string; resourceVersion?: string };
}

export interface ObjectCacheHandlers<T extends CachedObject> {
  /** A new object, or one changed (`old` is the previous version). */
  upsert?(object: T, old: T | undefined): void;
  deleted?(object: T): void;
  /** The cache holds a complete list for the first time. */
  synced?(): void;
}

/**
 * A list-then-watch cache of one collection (an informer): `get`/`list` read the latest objects,
 * handlers hear every change. A failed watch is resumed from the last version seen, or re-listed
 * when that version is gone (410), with backoff; `run` returns when `signal` aborts. Re-lists
 * every `resyncMs` too (GitLab's informers resync every 10 min).
 */
export class ObjectCache<T extends CachedObject> {
  private readonly objects = new Map<string, T>();
  private hasSynced = false;

  constructor(
    private readonly kube: KubeHttp,
    /** Collection path, e.g. "/apis/source.toolkit.fluxcd.io/v1/gitrepositories". */
    readonly path: string,
    private readonly handlers: ObjectCacheHandlers<T>,
    private readonly logger: Logger,
    private readonly resyncMs = 600_000,
    /** List options of both the list and the watch, e.g. `{ labelSelector: "app=web" }`. */
    private readonly query: Record<string, string> = {},
  ) {}

  get synced(): boolean {
    return this.hasSynced;
  }

  get(key: string): T | undefined {
    return this.objects.get(key);
  }

  list(): T[] {
    return [...this.objects.values()];
  }

  async run(signal: AbortSignal): Promise<void> {
    const backoff = new Backoff({ initialMs: 1_000, maxMs: 30_000 });
    let resourceVersion = "";
    let listedAt = 0;
    while (!signal.aborted) {
      try {
        if (resourceVersion === "" || Date.now() - listedAt >= this.resyncMs) {
          resourceVersion = await this.relist(signal);
          listedAt = Date.now();
        }
        await this.kube.watch<T>(
          this.path,
          resourceVersion,
          (event: WatchEvent<T>) => {
            const rv = event.object.metadata?.resourceVersion;
            if (rv) resourceVersion = rv;
            if (event.type === "BOOKMARK") return;
            if (event.type === "DELETED") this.remove(event.object);
            else this.upsert(event.object);
          },
          signal,
          this.query,
        );
        backoff.reset();
      } catch (error) {
        if (signal.aborted) return;
        if (error instanceof KubeApiError && error.status === 410) {
          resourceVersion = "";
          continue;
        }
        const delay = backoff.nextDelayMs();
        this.logger.warn({ err: error, path: this.path, retryInMs: delay }, "watch failed");
        await sleep(delay, signal);
      }
    }
  }

  private async relist(signal: AbortSignal): Promise<string> {
    const list = await this.kube.json<{ items?: T[]; metadata?: { resourceVersion?: string } }>("GET", this.path, { query: this.query, signal });
    const seen = new Set<string>();
    for (const item of list.items ?? []) {
      seen.add(keyOf(item));
      this.upsert(item);
    }
    for (const [key, object] of [...this.objects]) if (!seen.has(key)) this.remove(object);
    if (!this.hasSynced) {
      this.hasSynced = true;
      this.handlers.synced?.();
    }
    return list.metadata?.resourceVersion ?? "";
  }

  private upsert(object: T): void {
    const key = keyOf(object);
    const old = this.objects.get(key);
    if (old && old.metadata?.resourceVersion === object.metadata?.resourceVersion) return;
    this.objects.set(key, object);
    this.handlers.upsert?.(object, old);
  }

  private remove(object: T): void {
    const key = keyOf(object);
    if (!this.objects.delete(key)) return;
    this.handlers.deleted?.(object);
  }
}

/** `namespace/name` ("/name" for cluster-scoped objects). */
export function keyOf(object: CachedObject): string {
  return `${object.metadata?.namespace ?? ""}/${object.metadata?.name ?? ""}`;
}
