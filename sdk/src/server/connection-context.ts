import type { IncomingMessage } from "node:http";
import type { Http2ServerRequest } from "node:http2";
import { createContextKey, createContextValues, type ContextValues } from "@connectrpc/connect";

/** Aborts when the client's underlying connection (HTTP/2 session or HTTP/1.1 socket) closes. */
export const kConnectionClosed = createContextKey<AbortSignal>(new AbortController().signal, {
  description: "signal aborted when the caller's connection closes",
});

const signals = new WeakMap<object, AbortSignal>();

function closeSignalOf(emitter: NodeJS.EventEmitter & { closed?: boolean; destroyed?: boolean }): AbortSignal {
  let signal = signals.get(emitter);
  if (!signal) {
    const controller = new AbortController();
    signal = controller.signal;
    signals.set(emitter, signal);
    if (emitter.closed || emitter.destroyed) controller.abort();
    else emitter.once("close", () => controller.abort());
  }
  return signal;
}

/** connect-node `contextValues` hook: exposes the connection's lifetime to handlers. */
export function connectionContextValues(req: IncomingMessage | Http2ServerRequest): ContextValues {
  const values = createContextValues();
  const session = "stream" in req && req.stream ? req.stream.session : undefined;
  const owner = session ?? req.socket;
  if (owner) values.set(kConnectionClosed, closeSignalOf(owner));
  return values;
}
