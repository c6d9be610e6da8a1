/**
 * A bounded single-consumer queue exposed as an AsyncIterable. `push` resolves once the item fits
 * within `capacity`, which gives producers backpressure: a fast sender waits for a slow receiver
 * instead of buffering a whole stream in memory.
 */
export class AsyncQueue<T> implements AsyncIterable<T> {
  private readonly items: T[] = [];
  private readonly spaceWaiters: Array<() => void> = [];
  private itemWaiter: (() => void) | undefined;
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

  /** Adds an item; waits while the queue is full. Throws if the queue was closed. */
  async push(item: T): Promise<void> {
    while (!this.closed && this.items.length >= this.capacity) {
      await new Promise<void>((resolve) => this.spaceWaiters.push(resolve));
    }
    if (this.closed) {
      throw this.failure?.error ?? new Error("queue closed");
    }
    this.items.push(item);
    this.wakeConsumer();
  }

  /** Ends the stream after the queued items; with `error`, the consumer gets it instead of the rest. */
  close(error?: unknown): void {
    if (this.closed) return;
    this.closed = true;
    if (error !== undefined) {
      this.failure = { error };
      this.items.length = 0;
    }
    this.wakeConsumer();
    for (const wake of this.spaceWaiters.splice(0)) wake();
  }

  /** Takes the next item; `undefined` done when closed and drained. */
  async next(): Promise<IteratorResult<T, undefined>> {
    for (;;) {
      if (this.items.length > 0) {
        const value = this.items.shift() as T;
        this.spaceWaiters.shift()?.();
        return { done: false, value };
      }
      if (this.closed) {
        if (this.failure) throw this.failure.error;
        return { done: true, value: undefined };
      }
      await new Promise<void>((resolve) => (this.itemWaiter = resolve));
    }
  }

  private wakeConsumer(): void {
    const wake = this.itemWaiter;
    this.itemWaiter = undefined;
    wake?.();
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
