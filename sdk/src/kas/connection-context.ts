import type { IncomingMessage } from "node:http";
import type { Http2ServerRequest } from "node:http2";
import { createContextKey, type ContextKey, type ContextValues } from "@connectrpc/connect";

/**
 * The lifetime of a caller's underlying connection (HTTP/2 session or HTTP/1.1 socket). One per
 * connection, shared by all of its calls; it holds nothing per call until asked.
 */
export interface ConnectionScope {
  readonly closed: boolean;
  /** Calls `listener` once when the connection closes (at once if it has); returns a function that stops. */
  onClose(listener: () => void): () => void;
  /** Aborted when the connection closes; created on first use. */
  readonly signal: AbortSignal;
}

/** The caller's connection; undefined outside KAS's agent API. */
export const kConnection = createContextKey<ConnectionScope | undefined>(undefined, {
  description: "the caller's connection",
});

/** Aborts when the client's underlying connection (HTTP/2 session or HTTP/1.1 socket) closes. */
export const kConnectionClosed = createContextKey<AbortSignal>(new AbortController().signal, {
  description: "signal aborted when the caller's connection closes",
});

type Owner = NodeJS.EventEmitter & { closed?: boolean; destroyed?: boolean };

const scopes = new WeakMap<object, Scope>();

class Scope implements ConnectionScope {
  closed = false;
  private listeners: Set<() => void> | undefined;
  private controller: AbortController | undefined;

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      if (this.closed) this.controller.abort();
    }
    return this.controller.signal;
  }

  onClose(listener: () => void): () => void {
    if (this.closed) {
      listener();
      return noop;
    }
    const listeners = (this.listeners ??= new Set());
    listeners.add(listener);
    return () => listeners.delete(listener);
  }

  fire(): void {
    if (this.closed) return;
    this.closed = true;
    this.controller?.abort();
    const listeners = this.listeners;
    this.listeners = undefined;
    if (listeners) for (const listener of listeners) listener();
  }
}

/** Shared by every connection (no closure per connection). */
function onOwnerClose(this: Owner): void {
  scopes.get(this)?.fire();
}

function scopeOf(owner: Owner): Scope {
  let scope = scopes.get(owner);
  if (!scope) {
    scope = new Scope();
    scopes.set(owner, scope);
    if (owner.closed || owner.destroyed) scope.fire();
    else owner.on("close", onOwnerClose);
  }
  return scope;
}

/** Context values of one call: `kConnection`, and `kConnectionClosed` made only when read. */
class ConnectionContextValues implements ContextValues {
  private values: Map<symbol, unknown> | undefined;

  constructor(private readonly scope: Scope | undefined) {}

  get<T>(key: ContextKey<T>): T {
    if (this.values?.has(key.id)) return this.values.get(key.id) as T;
    if (this.scope && key.id === kConnection.id) return this.scope as T;
    if (this.scope && key.id === kConnectionClosed.id) return this.scope.signal as T;
    return key.defaultValue;
  }

  set<T>(key: ContextKey<T>, value: T): this {
    (this.values ??= new Map()).set(key.id, value);
    return this;
  }

  delete(key: ContextKey<unknown>): this {
    this.values?.delete(key.id);
    return this;
  }
}

/** connect-node `contextValues` hook: exposes the connection's lifetime to handlers. */
export function connectionContextValues(req: IncomingMessage | Http2ServerRequest): ContextValues {
  const session = "stream" in req && req.stream ? req.stream.session : undefined;
  const owner = session ?? req.socket;
  return new ConnectionContextValues(owner ? scopeOf(owner) : undefined);
}

/** Calls `listener` once when `signal` aborts (at once if it has); returns a function that stops. */
export function onAbort(signal: AbortSignal, listener: () => void): () => void {
  if (signal.aborted) {
    listener();
    return noop;
  }
  signal.addEventListener("abort", listener, { once: true });
  return () => signal.removeEventListener("abort", listener);
}

function noop(): void {}
