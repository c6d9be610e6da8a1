// Waiting in tests: for an event, never for a fixed time. The bounds only end a hung test, so
// they are generous; a figure worth keeping belongs in `npm run bench`.
import { ConnectError } from "@connectrpc/connect";

/** How long a wait may last before the test is taken as hung. */
export const HUNG_MS = 10_000;

/**
 * Polls `predicate` every 10 ms until it holds; throws, naming `what`, after `timeoutMs` (a test
 * that hangs, not a timing assertion).
 */
export async function waitFor(predicate: () => boolean | Promise<boolean>, timeoutMs = HUNG_MS, what = "condition"): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** `p`, or a rejection naming `what` when it has not settled after `ms` (a hung test). */
export function within<T>(ms: number, p: Promise<T>, what = "operation"): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
    }),
  ]);
}

/** The error `p` rejects with, as a ConnectError; throws when `p` resolves. */
export async function rejection(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("expected a rejection, but the call succeeded");
}

/** The error `p` rejects with, which must be a `type`; throws when `p` resolves or fails otherwise. */
export async function rejectionOf<E extends Error>(p: Promise<unknown>, type: abstract new (...args: never[]) => E): Promise<E> {
  try {
    await p;
  } catch (err) {
    if (err instanceof type) return err;
    throw err;
  }
  throw new Error(`expected a rejection with a ${type.name}, but the call succeeded`);
}

/**
 * Reads `stream` to its end and returns the error it fails with, as a ConnectError; throws when it
 * ends cleanly. `onMessage` sees each message (e.g. to cancel after a few).
 */
export function streamRejection<T>(stream: AsyncIterable<T>, onMessage?: (message: T, index: number) => void | Promise<void>): Promise<ConnectError> {
  return rejection(
    (async () => {
      let i = 0;
      for await (const message of stream) await onMessage?.(message, i++);
    })(),
  );
}

/** A promise with its resolve function, to let a test step go at a moment of the test's choosing. */
export function deferred<T = void>(): { promise: Promise<T>; resolve(value: T): void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}
