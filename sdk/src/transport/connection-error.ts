import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";

const kConnectionError = Symbol("kasbridge.connectionError");

/**
 * Tags an error raised by the connection under the HTTP/2 session (socket,
 * TLS, WebSocket). connect-node maps many of these (resets, TLS and
 * WebSocket handshake failures) to Internal or Aborted; for the agent they all
 * mean "KAS unreachable, retry", which gRPC spells Unavailable.
 */
export function markConnectionError(err: Error): void {
  (err as Error & { [kConnectionError]?: true })[kConnectionError] = true;
}

function isConnectionError(reason: unknown): boolean {
  const seen = new Set<unknown>();
  for (let e = reason; e instanceof Error && !seen.has(e); e = e.cause) {
    seen.add(e);
    if ((e as Error & { [kConnectionError]?: true })[kConnectionError]) return true;
  }
  return false;
}

/** Returns the error as Unavailable when it came from the connection. */
export function connectionErrorToUnavailable(reason: unknown): unknown {
  if (!isConnectionError(reason)) return reason;
  const ce = ConnectError.from(reason);
  if (ce.code === Code.Unavailable || ce.code === Code.Canceled) return ce;
  return new ConnectError(ce.rawMessage, Code.Unavailable, ce.metadata, undefined, ce);
}

/** Applies {@link connectionErrorToUnavailable} to a call and its response stream. */
export const unavailableOnConnectionError: Interceptor = (next) => async (req) => {
  try {
    const res = await next(req);
    if (!res.stream) return res;
    const inner = res.message;
    return {
      ...res,
      message: (async function* () {
        try {
          yield* inner;
        } catch (e) {
          throw connectionErrorToUnavailable(e);
        }
      })(),
    };
  } catch (e) {
    throw connectionErrorToUnavailable(e);
  }
};
