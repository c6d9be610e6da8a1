/** What an inbox pauses when it fills up: e.g. an HTTP/2 stream, so flow control holds the peer. */
export interface PausableSource {
  pause(): unknown;
  resume(): unknown;
}

/**
 * Decoded messages from a push source (a stream's "data" events) waiting for their single reader.
 * At most `highWater` wait: beyond that the source is paused, and it resumes once the reader has
 * caught up, so a slow reader holds the sender back instead of buffering a whole stream. An item
 * delivered while the reader waits is handed over directly.
 */
export class MessageInbox<T> {
  /** Set once the source exists (it may be opened after the inbox). */
  source: PausableSource | undefined;
  private readonly items: T[] = [];
  private waiter: { resolve(r: IteratorResult<T, undefined>): void; reject(e: unknown): void } | undefined;
  private ended = false;
  private failure: { error: unknown } | undefined;
  private paused = false;

  constructor(private readonly highWater = 4) {}

  /** Whether the inbox has ended or failed (nothing more will be delivered). */
  get isSettled(): boolean {
    return this.ended || this.failure !== undefined;
  }

  deliver(item: T): void {
    const waiter = this.waiter;
    if (waiter) {
      this.waiter = undefined;
      waiter.resolve({ done: false, value: item });
      return;
    }
    this.items.push(item);
    if (this.items.length >= this.highWater && !this.paused && this.source) {
      this.paused = true;
      this.source.pause();
    }
  }

  /** No more items: the reader gets the waiting ones, then done. */
  end(): void {
    if (this.isSettled) return;
    this.ended = true;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.resolve({ done: true, value: undefined });
  }

  /** The reader gets the waiting items (none with `discard`), then `error`. */
  fail(error: unknown, discard = false): void {
    if (this.isSettled) return;
    this.failure = { error };
    if (discard) this.items.length = 0;
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.reject(error);
  }

  next(): Promise<IteratorResult<T, undefined>> {
    if (this.items.length > 0) {
      const value = this.items.shift() as T;
      if (this.paused && this.items.length < this.highWater) {
        this.paused = false;
        this.source?.resume();
      }
      return Promise.resolve({ done: false, value });
    }
    if (this.failure) return Promise.reject(this.failure.error);
    if (this.ended) return Promise.resolve({ done: true, value: undefined });
    if (this.waiter) return Promise.reject(new Error("MessageInbox has a single reader"));
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }
}
