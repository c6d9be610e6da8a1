/**
 * User access (GitLab's user_access): the platform's answer to KAS's Kubernetes API proxy about
 * a user, `POST /internal/kubernetes/authorize_proxy_user`. The internal API (createInternalApi)
 * mounts it with its KAS JWT check and error handling.
 */
import express from "express";
import type { RequestHandler, Router } from "express";
import { AUTHORIZE_PROXY_USER_PATH } from "@kasbridge/sdk/platform-client";
import { guardRequestBody, type BodyLimit } from "../api/body-limit.js";
import { proxyUserAuthorizationEntity } from "../api/entities.js";
import { HttpError, paramError } from "../api/http-errors.js";
import { bodyOf, parseId, requiredString } from "../api/params.js";
import type { PlatformServices } from "../services/platform-services.js";
import { PROXY_USER_ACCESS_TYPES, type ProxyUserAccessType } from "./proxy-user-authorization.js";

/** GitLab's `POST /internal/kubernetes/authorize_proxy_user`, behind the KAS JWT check. */
export function registerProxyUserRoutes(router: Router, deps: { services: PlatformServices; kasJwt: RequestHandler; bodyLimit: BodyLimit }): void {
  const json = express.json({ limit: deps.bodyLimit.maxBytes });
  router.post(AUTHORIZE_PROXY_USER_PATH, deps.kasJwt, guardRequestBody(deps.bodyLimit), json, async (req, res) => {
    const b = bodyOf(req);
    // Grape's parameter checks first: agent_id, access_type (one of two), access_key, and
    // csrf_token with a session cookie.
    const agentIdRaw = b.agent_id;
    if (agentIdRaw === undefined || agentIdRaw === null || agentIdRaw === "") throw paramError("agent_id is missing");
    const agentId = parseId(agentIdRaw, "agent_id");
    const accessType = requiredString(b, "access_type");
    if (!(PROXY_USER_ACCESS_TYPES as readonly string[]).includes(accessType)) throw paramError("access_type does not have a valid value");
    const accessKey = requiredString(b, "access_key");
    if (accessType === "session_cookie") requiredString(b, "csrf_token");

    const result = await deps.services.proxyUserAuthorization.authorizeProxyUser({
      agentId,
      accessType: accessType as ProxyUserAccessType,
      accessKey,
    });
    if (!result.ok) {
      if (result.reason === "insufficient_scope") {
        throw new HttpError(403, {
          error: "insufficient_scope",
          error_description: "The request requires higher privileges than provided by the access token.",
          scope: "k8s_proxy",
          message: result.message,
        });
      }
      throw new HttpError(result.status, { message: result.message });
    }
    res.json(proxyUserAuthorizationEntity(result.authorization));
  });
}
