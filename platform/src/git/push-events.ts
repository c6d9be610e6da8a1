import type { Logger } from "pino";

/** One ref updated by a push, as git's post-receive hook reports it. */
export interface RefUpdate {
  /** Full ref name, e.g. "refs/heads/main". */
  ref: string;
  /** Previous object id; all zeros when the ref was created. */
  before: string;
  /** New object id; all zeros when the ref was deleted. */
  after: string;
}

/** A ref updated by a push to a project's repository. One event per updated ref. */
export interface PushEvent extends RefUpdate {
  projectId: number;
  /**
   * Paths whose content differs between `before` and `after` (`git diff-tree --name-only
   * --no-renames`, so a rename lists both paths). A created ref lists every file of `after`'s
   * tree; a deleted ref every file of `before`'s tree.
   */
  changedPaths: string[];
}

export type PushListener = (event: PushEvent) => void;

export interface PushDispatcherOptions {
  changedPaths(projectId: number, update: RefUpdate): Promise<string[]>;
  deliver(event: PushEvent): void;
  /**
   * How long a push whose `before` does not follow the last delivered `after` of its ref waits for
   * the push that should come first. Default 2000 ms.
   */
  reorderWaitMs?: number;
  logger: Logger;
}

interface PendingPush {
  updates: RefUpdate[];
  arrivedAt: number;
  done: () => void;
}

interface ProjectQueue {
  /** Last delivered `after` per ref (since this process started). */
  lastAfter: Map<string, string>;
  pending: PendingPush[];
  running: boolean;
  timer: NodeJS.Timeout | undefined;
}

/**
 * Turns reported ref updates into PushEvents, one project at a time and in push order.
 *
 * Reports reach us when each push's git process exits, which is not always the order the refs
 * were updated in (a slow hook can finish after a later push to the same ref). Git's own
 * compare-and-swap makes the true order visible: a push of ref R from X follows the push that set
 * R to X. So a report whose `before` does not match the last delivered `after` of its ref is held
 * back (up to `reorderWaitMs`) while reports that do match go first. Unknown refs (first seen
 * since start) are never held.
 */
export class PushDispatcher {
  private readonly queues = new Map<number, ProjectQueue>();
  private readonly reorderWaitMs: number;

  constructor(private readonly options: PushDispatcherOptions) {
    this.reorderWaitMs = options.reorderWaitMs ?? 2000;
  }

  /** Queues one push's updates; resolves once their events have been delivered. */
  submit(projectId: number, updates: RefUpdate[]): Promise<void> {
    if (updates.length === 0) return Promise.resolve();
    let queue = this.queues.get(projectId);
    if (!queue) {
      queue = { lastAfter: new Map(), pending: [], running: false, timer: undefined };
      this.queues.set(projectId, queue);
    }
    const q = queue;
    return new Promise<void>((resolve) => {
      q.pending.push({ updates, arrivedAt: Date.now(), done: resolve });
      void this.pump(projectId, q);
    });
  }

  private isNext(q: ProjectQueue, push: PendingPush, now: number): boolean {
    if (now - push.arrivedAt >= this.reorderWaitMs) return true;
    return push.updates.every((u) => {
      const last = q.lastAfter.get(u.ref);
      return last === undefined || last === u.before;
    });
  }

  private async pump(projectId: number, q: ProjectQueue): Promise<void> {
    if (q.running) return;
    q.running = true;
    if (q.timer) clearTimeout(q.timer);
    q.timer = undefined;
    try {
      while (q.pending.length > 0) {
        const now = Date.now();
        const index = q.pending.findIndex((p) => this.isNext(q, p, now));
        if (index < 0) {
          const wait = Math.max(1, Math.min(...q.pending.map((p) => p.arrivedAt + this.reorderWaitMs - now)));
          q.timer = setTimeout(() => void this.pump(projectId, q), wait);
          q.timer.unref();
          return;
        }
        const [push] = q.pending.splice(index, 1);
        if (index > 0 || now - push!.arrivedAt >= this.reorderWaitMs) {
          this.options.logger.debug({ projectId, refs: push!.updates.map((u) => u.ref) }, "push delivered out of arrival order");
        }
        for (const update of push!.updates) {
          let changedPaths: string[];
          try {
            changedPaths = await this.options.changedPaths(projectId, update);
          } catch (err) {
            this.options.logger.warn({ err, projectId, ref: update.ref }, "cannot compute the paths a push changed");
            changedPaths = [];
          }
          q.lastAfter.set(update.ref, update.after);
          this.options.deliver({ projectId, ref: update.ref, before: update.before, after: update.after, changedPaths });
        }
        push!.done();
      }
    } finally {
      q.running = false;
    }
  }
}
