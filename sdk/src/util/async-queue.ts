const resolved: Promise<void> = Promise.resolve();

/**
 * A bounded single-consumer queue exposed as an AsyncIterable. `push` resolves once the item fits
 * within `capacity`, which gives producers backpressure: a fast sender waits for a slow receiver
 * instead of buffering a whole stream in memory.
 *
 * Hot path: an item pushed while the consumer waits is handed to it directly, and a push that fits
 * returns an already-resolved promise, so a message crossing the queue costs one promise, not four.
 */
export class AsyncQueue<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private spaceWaiters: Array<() => void> | undefined;
  private consumer: { resolve(result: IteratorResult<T, undefined>): void; reject(error: unknown): void } | undefined;
  private closed = false;
  private failure: { error: unknown } | undefined;

  /** @param capacity items held before `push` waits; at least 1. */
  constructor(private readonly capacity = 16) {}

  get size(): number {
    return this.items.length;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** Adds an item; waits while the queue is full. Rejects if the queue was closed. */
  push(item: T): Promise<void> {
    if (this.closed) return Promise.reject(this.closedError());
    const consumer = this.consumer;
    if (consumer) {
      // The consumer is waiting, so the queue is empty: hand the item over.
      this.consumer = undefined;
      consumer.resolve({ done: false, value: item });
      return resolved;
    }
    if (this.items.length < this.capacity) {
      this.items.push(item);
      return resolved;
    }
    return this.pushWhenSpace(item);
  }

  private async pushWhenSpace(item: T): Promise<void> {
    while (!this.closed && this.items.length >= this.capacity) {
      await new Promise<void>((resolve) => (this.spaceWaiters ??= []).push(resolve));
    }
    if (this.closed) throw this.closedError();
    const consumer = this.consumer;
    if (consumer) {
      this.consumer = undefined;
      consumer.resolve({ done: false, value: item });
    } else {
      this.items.push(item);
    }
  }

  /** Ends the stream after the queued items; with `error`, the consumer gets it instead of the rest. */
  close(error?: unknown): void {
    if (this.closed) return;
    this.closed = true;
    if (error !== undefined) {
      this.failure = { error };
      this.items.length = 0;
    }
    const consumer = this.consumer;
    this.consumer = undefined;
    if (consumer) {
      // A waiting consumer means nothing was queued.
      if (this.failure) consumer.reject(this.failure.error);
      else consumer.resolve({ done: true, value: undefined });
    }
    const waiters = this.spaceWaiters;
    this.spaceWaiters = undefined;
    if (waiters) for (const wake of waiters) wake();
  }

  /** Takes the next item; `undefined` done when closed and drained. */
  next(): Promise<IteratorResult<T, undefined>> {
    if (this.items.length > 0) {
      const value = this.items.shift() as T;
      this.spaceWaiters?.shift()?.();
      return Promise.resolve({ done: false, value });
    }
    if (this.closed) {
      if (this.failure) return Promise.reject(this.failure.error);
      return Promise.resolve({ done: true, value: undefined });
    }
    if (this.consumer) return Promise.reject(new Error("AsyncQueue has a single consumer"));
    return new Promise((resolve, reject) => (this.consumer = { resolve, reject }));
  }

  private closedError(): unknown {
    return this.failure?.error ?? new Error("queue closed");
  }

  [Symbol.asyncIterator](): AsyncIterator<T, undefined> {
    return {
      next: () => this.next(),
      return: async () => {
        this.close();
        return { done: true, value: undefined };
      },
      // connect-es propagates consumer failures into request iterables through throw().
      throw: async (error?: unknown) => {
        this.close(error ?? new Error("queue aborted"));
        return { done: true, value: undefined };
      },
    };
  }
}
