/**
 * GitLab's protected branches API (`/projects/:id/protected_branches`): list, show, protect,
 * unprotect. Like GitLab, every endpoint needs the Maintainer role (admin_project); the REST API
 * (createPlatformApi) mounts these routes with its authentication and error handling.
 */
import type { Request, Response, Router } from "express";
import { AccessLevel } from "../services/access-levels.js";
import { PROTECTED_BRANCH_ACCESS_LEVELS } from "../services/protected-branches.js";
import type { Project } from "../services/projects.js";
import { protectedBranchEntity } from "./entities.js";
import { forbidden, notFound, paramError } from "./http-errors.js";
import { paginate } from "./pagination.js";
import { bodyOf, optionalBoolean, optionalInteger, requiredString } from "./params.js";
import type { RestRouteDeps } from "./rest-route-deps.js";

/** Minimum role to see and change a project's protected branches (GitLab: admin_project, Maintainer). */
export const MANAGE_PROTECTED_BRANCHES_ACCESS_LEVEL = AccessLevel.MAINTAINER;

export function registerProtectedBranchRoutes(router: Router, deps: RestRouteDeps): void {
  const { services, read, write, body, currentUser } = deps;
  const base = "/api/v4/projects/:id/protected_branches";

  async function loadProjectToManage(req: Request, res: Response): Promise<Project> {
    const user = currentUser(res);
    const project = await deps.loadProject(req, user);
    if ((await deps.projectAccess(user, project)) < MANAGE_PROTECTED_BRANCHES_ACCESS_LEVEL) throw forbidden();
    return project;
  }

  function accessLevel(b: Record<string, unknown>, name: string): number | undefined {
    const level = optionalInteger(b, name);
    if (level !== undefined && !PROTECTED_BRANCH_ACCESS_LEVELS.includes(level)) throw paramError(`${name} does not have a valid value`);
    return level;
  }

  router.get(base, read, async (req, res) => {
    const project = await loadProjectToManage(req, res);
    const search = typeof req.query.search === "string" && req.query.search !== "" ? req.query.search : undefined;
    const branches = await services.protectedBranches.list(project.id, { search });
    res.json(paginate(req, res, branches).map(protectedBranchEntity));
  });

  // The name is one path segment: a wildcard with "/" comes URL-encoded (release%2F*), as in GitLab.
  router.get(`${base}/:name`, read, async (req, res) => {
    const project = await loadProjectToManage(req, res);
    const branch = await services.protectedBranches.get(project.id, String(req.params.name));
    if (!branch) throw notFound();
    res.json(protectedBranchEntity(branch));
  });

  router.post(base, write, ...body, async (req, res) => {
    const project = await loadProjectToManage(req, res);
    const b = bodyOf(req);
    const branch = await services.protectedBranches.protect(project.id, {
      name: requiredString(b, "name"),
      pushAccessLevel: accessLevel(b, "push_access_level"),
      mergeAccessLevel: accessLevel(b, "merge_access_level"),
      allowForcePush: optionalBoolean(b, "allow_force_push"),
    });
    res.status(201).json(protectedBranchEntity(branch));
  });

  router.delete(`${base}/:name`, write, async (req, res) => {
    const project = await loadProjectToManage(req, res);
    if (!(await services.protectedBranches.unprotect(project.id, String(req.params.name)))) throw notFound();
    res.status(204).end();
  });
}
