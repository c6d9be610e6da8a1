import type { EventEmitter } from "node:events";

/**
 * Resolves when a writable that refused a write can take more ("drain"), or has closed, so a
 * writer waiting on backpressure never hangs on a stream that went away.
 */
export function drained(stream: Pick<EventEmitter, "once" | "off">): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      stream.off("drain", done);
      stream.off("close", done);
      resolve();
    };
    stream.once("drain", done);
    stream.once("close", done);
  });
}
