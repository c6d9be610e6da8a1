import type { Interceptor } from "@connectrpc/connect";

/** A client interceptor that sends `authorization: Bearer <token>` (an agent token, in tests). */
export function bearer(token: string): Interceptor {
  return (next) => (req) => {
    req.header.set("authorization", `Bearer ${token}`);
    return next(req);
  };
}
