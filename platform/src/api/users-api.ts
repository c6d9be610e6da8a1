/**
 * GitLab's users and personal access tokens API (`/user`, `/users`, `/personal_access_tokens`);
 * the REST API (createPlatformApi) mounts these routes with its authentication and error handling.
 */
import type { Router } from "express";
import { personalAccessTokenEntity, userBasicEntity, userEntity } from "./entities.js";
import { HttpError, notFound, paramError } from "./http-errors.js";
import { bodyOf, optionalBoolean, optionalString, parseId, requiredString, stringArray } from "./params.js";
import type { RestRouteDeps } from "./rest-route-deps.js";

export function registerUserRoutes(router: Router, deps: RestRouteDeps): void {
  const { services, read, write, body, currentUser, requireAdmin, baseUrl } = deps;

  router.get("/api/v4/user", read, (req, res) => {
    res.json(userEntity(currentUser(res), baseUrl(req)));
  });

  router.get("/api/v4/users/:id", read, async (req, res) => {
    const user = await services.users.get(parseId(req.params.id, "id"));
    if (!user) throw notFound("User");
    const viewer = currentUser(res);
    res.json(viewer.admin || viewer.id === user.id ? userEntity(user, baseUrl(req)) : userBasicEntity(user, baseUrl(req)));
  });

  router.post("/api/v4/users", write, requireAdmin, ...body, async (req, res) => {
    const b = bodyOf(req);
    const user = await services.users.create({
      username: requiredString(b, "username"),
      name: requiredString(b, "name"),
      email: optionalString(b, "email"),
      admin: optionalBoolean(b, "admin"),
    });
    res.status(201).json(userEntity(user, baseUrl(req)));
  });

  router.post("/api/v4/users/:id/personal_access_tokens", write, requireAdmin, ...body, async (req, res) => {
    const userId = parseId(req.params.id, "id");
    if (!(await services.users.get(userId))) throw notFound("User");
    const b = bodyOf(req);
    const scopes = stringArray(b, "scopes");
    if (!scopes || scopes.length === 0) throw paramError("scopes is missing");
    const { token, secret } = await services.personalAccessTokens.create(userId, {
      name: requiredString(b, "name"),
      scopes,
      expiresAt: optionalString(b, "expires_at"),
      description: optionalString(b, "description"),
    });
    res.status(201).json({ ...personalAccessTokenEntity(token), token: secret });
  });

  // Blocking ends everything the user's tokens opened, KAS's Kubernetes API proxy streams included
  // (the revocation feed tells KAS). GitLab answers 201 with `true`, or `null` for a user already
  // blocked; unblock answers `true` when the user was blocked, else `false`.
  router.post("/api/v4/users/:id/block", write, requireAdmin, async (req, res) => {
    const userId = parseId(req.params.id, "id");
    if (!(await services.users.get(userId))) throw notFound("User");
    if (userId === currentUser(res).id) throw new HttpError(403, { message: "403 Forbidden - The API initiating user cannot be blocked by the API" });
    const result = await services.users.block(userId);
    if (!result) throw notFound("User");
    res.status(201).json(result.changed ? true : null);
  });

  router.post("/api/v4/users/:id/unblock", write, requireAdmin, async (req, res) => {
    const result = await services.users.unblock(parseId(req.params.id, "id"));
    if (!result) throw notFound("User");
    res.status(201).json(result.changed);
  });

  // GitLab's `DELETE /personal_access_tokens/:id` (admins any token, users their own; 400 for
  // someone else's) and `DELETE /personal_access_tokens/self` (the token making the request).
  router.delete("/api/v4/personal_access_tokens/self", write, async (_req, res) => {
    const { token, user } = deps.currentAuth(res);
    await services.personalAccessTokens.revoke(user.id, token.id);
    res.status(204).end();
  });

  router.delete("/api/v4/personal_access_tokens/:id", write, async (req, res) => {
    const token = await services.personalAccessTokens.get(parseId(req.params.id, "id"));
    if (!token) throw notFound();
    const user = currentUser(res);
    if (!user.admin && token.userId !== user.id) throw new HttpError(400, { message: "400 Bad request" });
    await services.personalAccessTokens.revoke(token.userId, token.id);
    res.status(204).end();
  });
}
