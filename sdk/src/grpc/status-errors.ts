import { Code, ConnectError } from "@connectrpc/connect";

/** The error calls and tunnels end with when KAS shuts down. */
export function kasShuttingDownError(): ConnectError {
  return new ConnectError("KAS is shutting down", Code.Unavailable);
}

/**
 * The status a handler's failure ends a call with, as connect-es sends it: a ConnectError as it
 * is, anything else INTERNAL "internal error".
 */
export function handlerError(error: unknown): ConnectError {
  return error instanceof ConnectError ? error : new ConnectError("internal error", Code.Internal, undefined, undefined, error);
}
