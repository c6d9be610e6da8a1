/**
 * What a test opened, released in reverse order afterwards: every step runs even when an earlier
 * one throws (a failing step must not leave processes, servers or sockets behind), and the errors
 * are reported together at the end.
 */
export class Cleanup {
  private readonly steps: Array<() => unknown> = [];

  /** Runs `fn` at cleanup; returns `value` so a resource can be registered where it is made. */
  add<T>(fn: () => unknown, value?: T): T {
    this.steps.push(fn);
    return value as T;
  }

  /** Destroys the socket, session or stream at cleanup. */
  track<T extends { destroy(): unknown }>(value: T): T {
    return this.add(() => value.destroy(), value);
  }

  /** Runs every step, last added first; throws the first error (all of them when several fail). */
  async run(): Promise<void> {
    const errors: unknown[] = [];
    for (const step of this.steps.splice(0).reverse()) {
      try {
        await step();
      } catch (error) {
        errors.push(error);
      }
    }
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, `${errors.length} cleanup steps failed`);
  }
}
