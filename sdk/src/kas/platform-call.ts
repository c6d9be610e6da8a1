import { Code, ConnectError } from "@connectrpc/connect";
import { PlatformError } from "../platform-client/platform-client.js";

/** Runs a platform call; its PlatformError becomes the gRPC code GitLab's KAS answers with, named by `what`. */
export async function platformCall<T>(call: () => Promise<T>, what: string): Promise<T> {
  try {
    return await call();
  } catch (err) {
    if (!(err instanceof PlatformError)) throw err;
    const code = { unauthenticated: Code.Unauthenticated, forbidden: Code.PermissionDenied, not_found: Code.NotFound, unavailable: Code.Unavailable }[err.kind];
    throw new ConnectError(`${what}: ${err.message}`, code);
  }
}
