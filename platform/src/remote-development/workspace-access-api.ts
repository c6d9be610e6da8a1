/**
 * The platform's routes of "reaching a workspace": KAS's question (internal API, KAS JWT) and the
 * browser's login step, which sends the workspace owner back to the workspace host with a
 * one-time token (workspace-access.ts).
 */
import express from "express";
import type { RequestHandler, Router } from "express";
import { WORKSPACE_ACCESS_PATH, WORKSPACE_CALLBACK_PATH, WORKSPACE_LOGIN_PATH } from "@kasbridge/sdk/platform-client";
import { guardRequestBody, type BodyLimit } from "../api/body-limit.js";
import { HttpError, paramError } from "../api/http-errors.js";
import { bodyOf, requiredString } from "../api/params.js";
import { credentialFrom } from "../git/git-http-router.js";
import type { PlatformServices } from "../services/platform-services.js";
import { WORKSPACE_ACCESS_SCOPE, WORKSPACE_ACCESS_TYPES, type WorkspaceAccessGrant, type WorkspaceAccessType } from "./workspace-access.js";

/** The internal API's answer (parsed by the SDK's parseWorkspaceAccess). */
export function workspaceAccessEntity(g: WorkspaceAccessGrant) {
  const w = g.workspace;
  return {
    workspace: { id: w.id, name: w.name, namespace: w.namespace, actual_state: w.actualState, desired_state: w.desiredState },
    agent: { id: w.agentId },
    user: { id: g.user.id, username: g.user.username },
    // The generated Service is named like the workspace and maps each endpoint's port to itself.
    target: { namespace: w.namespace, service: w.name, port: g.port },
    personal_access_token: { id: g.token.id, expires_at: g.token.expiresAt },
    ...(g.session ? { session: { token: g.session.token, expires_at: g.session.expiresAt.toISOString() } } : {}),
  };
}

/** `POST …/kasbridge/workspace_access`, behind the KAS JWT check. */
export function registerWorkspaceAccessRoutes(router: Router, deps: { services: PlatformServices; kasJwt: RequestHandler; bodyLimit: BodyLimit }): void {
  router.post(WORKSPACE_ACCESS_PATH, deps.kasJwt, guardRequestBody(deps.bodyLimit), express.json({ limit: deps.bodyLimit.maxBytes }), async (req, res) => {
    const b = bodyOf(req);
    const host = requiredString(b, "host");
    const accessType = requiredString(b, "access_type");
    if (!(WORKSPACE_ACCESS_TYPES as readonly string[]).includes(accessType)) throw paramError("access_type does not have a valid value");
    const accessKey = requiredString(b, "access_key");
    const result = await deps.services.workspaceAccess.authorize({ host, accessType: accessType as WorkspaceAccessType, accessKey });
    if (!result.ok) throw new HttpError(result.status, { message: result.message });
    res.json(workspaceAccessEntity(result.grant));
  });
}

/**
 * `GET /-/kasbridge/workspaces/login?return_to=<workspace URL>`: the browser step. The user logs in
 * with a personal access token (`api` scope) as HTTP Basic password (the browser asks for it, as
 * for git over HTTP), `Authorization: Bearer` or `PRIVATE-TOKEN`; the owner of the workspace is
 * redirected to the workspace host's callback with a token of 60 s for that host only. The
 * redirect only ever goes to a workspace host of the user's, so this is no open redirect.
 */
export function registerWorkspaceLoginRoute(router: Router, deps: { services: PlatformServices }): void {
  router.get(WORKSPACE_LOGIN_PATH, async (req, res) => {
    res.set("Cache-Control", "no-store");
    const raw = typeof req.query.return_to === "string" ? req.query.return_to : "";
    let target: URL;
    try {
      target = new URL(raw);
    } catch {
      throw paramError("return_to must be the workspace URL");
    }
    if (target.protocol !== "https:" && target.protocol !== "http:") throw paramError("return_to must be an http(s) URL");
    const secret = req.get("private-token")?.trim() || credentialFrom(req);
    const found = secret ? await deps.services.personalAccessTokens.authenticate(secret) : undefined;
    if (!found) {
      res.set("WWW-Authenticate", 'Basic realm="kasbridge workspaces"');
      throw new HttpError(401, { message: "401 Unauthorized - log in with a personal access token (scope api) as the password" });
    }
    if (!found.token.scopes.includes(WORKSPACE_ACCESS_SCOPE)) throw new HttpError(403, { message: "403 Forbidden - insufficient_scope", scope: WORKSPACE_ACCESS_SCOPE });
    const issued = await deps.services.workspaceAccess.issueCallbackToken(found.user, found.token, target.hostname);
    if (!issued.ok) throw new HttpError(issued.status, { message: issued.message });
    const callback = new URL(WORKSPACE_CALLBACK_PATH, target.origin);
    callback.searchParams.set("token", issued.token);
    callback.searchParams.set("return_to", `${target.pathname}${target.search}`);
    res.redirect(302, callback.href);
  });
}
