/**
 * GitLab's groups API (`/groups`, `/groups/:id/members`); the REST API (createPlatformApi) mounts
 * these routes with its authentication and error handling.
 */
import type { Router } from "express";
import { AccessLevel } from "../services/access-levels.js";
import { ServiceError } from "../services/errors.js";
import type { Namespace } from "../services/namespaces.js";
import type { User } from "../services/users.js";
import { parseVisibility } from "../services/validation.js";
import { groupEntity, memberEntity } from "./entities.js";
import { HttpError, forbidden, notFound } from "./http-errors.js";
import { bodyOf, optionalId, optionalString, parseId, requiredString } from "./params.js";
import type { RestRouteDeps } from "./rest-route-deps.js";

/** Minimum parent-group role to create a subgroup (GitLab's default subgroup_creation_level). */
const CREATE_SUBGROUP_ACCESS_LEVEL = AccessLevel.MAINTAINER;

export function registerGroupRoutes(router: Router, deps: RestRouteDeps): void {
  const { services, read, write, body, currentUser, baseUrl } = deps;

  async function groupAccess(user: User, group: Namespace): Promise<number> {
    return user.admin ? AccessLevel.OWNER : services.members.groupAccessLevel(user.id, group);
  }

  async function loadGroup(idOrPath: string, user: User): Promise<Namespace> {
    const group = /^[0-9]+$/.test(idOrPath)
      ? await services.namespaces.get(parseId(idOrPath, "id"))
      : await services.namespaces.getByFullPath(idOrPath);
    if (!group || group.kind !== "group" || !(await services.members.canReadGroup(user, group))) throw notFound("Group");
    return group;
  }

  router.post("/api/v4/groups", write, ...body, async (req, res) => {
    const user = currentUser(res);
    const b = bodyOf(req);
    const name = requiredString(b, "name");
    const path = requiredString(b, "path");
    const parentId = optionalId(b.parent_id, "parent_id");
    if (parentId !== undefined) {
      const parent = await loadGroup(String(parentId), user);
      if ((await groupAccess(user, parent)) < CREATE_SUBGROUP_ACCESS_LEVEL) throw forbidden();
    }
    try {
      const group = await services.namespaces.createGroup(
        {
          name,
          path,
          parentId,
          visibility: b.visibility === undefined ? undefined : parseVisibility(b.visibility, "private"),
          description: optionalString(b, "description"),
        },
        user.id,
      );
      res.status(201).json(groupEntity(group, baseUrl(req)));
    } catch (err) {
      // GitLab: render_api_error!("Failed to save group #{errors}", 400), without "Bad request".
      if (err instanceof ServiceError && err.kind === "invalid") throw new HttpError(400, { message: err.message });
      throw err;
    }
  });

  router.get("/api/v4/groups/:id", read, async (req, res) => {
    res.json(groupEntity(await loadGroup(String(req.params.id), currentUser(res)), baseUrl(req)));
  });

  router.post("/api/v4/groups/:id/members", write, ...body, async (req, res) => {
    const user = currentUser(res);
    const group = await loadGroup(String(req.params.id), user);
    // GitLab: admin_group_member is Owner-only.
    if ((await groupAccess(user, group)) < AccessLevel.OWNER) throw forbidden();
    const b = bodyOf(req);
    const member = await services.users.get(parseId(b.user_id ?? "", "user_id"));
    if (!member) throw notFound("User");
    const level = parseId(b.access_level ?? "", "access_level");
    const membership = await services.members.addGroupMember(group.id, member.id, level);
    res.status(201).json(memberEntity(member, membership, baseUrl(req)));
  });
}
