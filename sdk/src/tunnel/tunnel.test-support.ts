// Helpers shared by the tunnel tests (not part of the package: excluded from the build).
import type http2 from "node:http2";
import type { AddressInfo } from "node:net";
import type { Interceptor } from "@connectrpc/connect";
import { routingAgentIdHeader } from "../server/tunnel-gateway.js";

/** Sends `authorization: Bearer <token>` on every call (an agent's token). */
export function bearer(token: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}

/** Names the agent a gateway call is for. */
export function routeTo(agentId: number): Interceptor {
  return (next) => (req) => {
    req.header.set(routingAgentIdHeader, String(agentId));
    return next(req);
  };
}

export function listen(server: http2.Http2Server): Promise<void> {
  return new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
}

export function port(server: http2.Http2Server): number {
  return (server.address() as AddressInfo).port;
}

export function closeServer(server: http2.Http2Server): Promise<void> {
  return new Promise((resolve) => server.close(() => resolve()));
}

/** Polls `predicate` every 10 ms; throws after `timeoutMs`. */
export async function waitFor(predicate: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 10));
  }
}
