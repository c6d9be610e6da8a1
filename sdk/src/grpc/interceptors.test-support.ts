// Interceptors for clients in tests.
import type { Interceptor } from "@connectrpc/connect";
import { routingAgentIdHeader } from "../tunnel/server/tunnel-gateway.js";

/** Sends `authorization: Bearer <token>` on every call (an agent's token, in tests). */
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
