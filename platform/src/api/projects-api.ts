/**
 * GitLab's projects API (`/projects`, `/projects/:id/members`, raw repository files); the REST API
 * (createPlatformApi) mounts these routes with its authentication and error handling.
 */
import type { Request, Router } from "express";
import { GIT_DOWNLOAD_ACCESS_LEVEL } from "../git/git-http-router.js";
import { isValidRepoPath, isValidRevision } from "../git/git-names.js";
import { sendRepositoryFile } from "../git/send-file.js";
import { AccessLevel } from "../services/access-levels.js";
import { ServiceError } from "../services/errors.js";
import type { Namespace } from "../services/namespaces.js";
import type { Project } from "../services/projects.js";
import { parseVisibility } from "../services/validation.js";
import { memberEntity, projectEntity } from "./entities.js";
import { HttpError, forbidden, notFound, paramError } from "./http-errors.js";
import { bodyOf, optionalString, parseId } from "./params.js";
import type { RestRouteDeps } from "./rest-route-deps.js";

/** Minimum group role to create a project in it (GitLab's default project_creation_level). */
const CREATE_PROJECT_IN_GROUP_ACCESS_LEVEL = AccessLevel.DEVELOPER;

export function registerProjectRoutes(router: Router, deps: RestRouteDeps): void {
  const { services, read, write, body, currentUser, loadProject, projectAccess, baseUrl } = deps;

  router.post("/api/v4/projects", write, ...body, async (req, res) => {
    const user = currentUser(res);
    const b = bodyOf(req);
    const name = optionalString(b, "name");
    const path = optionalString(b, "path");
    if (!name && !path) throw paramError("name, path are missing, at least one parameter must be provided");

    let namespace: Namespace | undefined;
    const nsParam = b.namespace_id ?? b.namespace;
    if (nsParam === undefined || nsParam === null || nsParam === "") {
      namespace = await services.namespaces.personalNamespaceOf(user.id);
    } else if (typeof nsParam === "string" && !/^[0-9]+$/.test(nsParam)) {
      namespace = await services.namespaces.getByFullPath(nsParam);
    } else {
      namespace = await services.namespaces.get(parseId(nsParam, "namespace_id"));
    }
    if (!namespace) throw notFound("Namespace");
    const allowed =
      user.admin ||
      (namespace.kind === "user"
        ? namespace.ownerId === user.id
        : (await services.members.groupAccessLevel(user.id, namespace)) >= CREATE_PROJECT_IN_GROUP_ACCESS_LEVEL);
    if (!allowed) {
      // Hide groups the user cannot see at all.
      if (namespace.kind === "group" && !(await services.members.canReadGroup(user, namespace))) throw notFound("Namespace");
      throw forbidden();
    }
    try {
      const project = await services.projects.create(
        {
          name,
          path,
          namespaceId: namespace.id,
          description: optionalString(b, "description"),
          defaultBranch: optionalString(b, "default_branch"),
          visibility: b.visibility === undefined ? undefined : parseVisibility(b.visibility, "private"),
        },
        user.id,
      );
      res.status(201).json(await projectJson(project, req));
    } catch (err) {
      // GitLab: render_validation_error! → {"message": {"name": ["has already been taken"], ...}}
      if (err instanceof ServiceError && err.kind === "invalid" && err.fieldErrors) {
        throw new HttpError(400, { message: err.fieldErrors });
      }
      throw err;
    }
  });

  async function projectJson(project: Project, req: Request) {
    const owner = project.namespace.kind === "user" && project.namespace.ownerId !== null
      ? await services.users.get(project.namespace.ownerId)
      : undefined;
    return projectEntity(project, baseUrl(req), owner);
  }

  router.get("/api/v4/projects/:id", read, async (req, res) => {
    res.json(await projectJson(await loadProject(req, currentUser(res)), req));
  });

  router.post("/api/v4/projects/:id/members", write, ...body, async (req, res) => {
    const user = currentUser(res);
    const project = await loadProject(req, user);
    const access = await projectAccess(user, project);
    if (access < AccessLevel.MAINTAINER) throw forbidden();
    const b = bodyOf(req);
    const member = await services.users.get(parseId(b.user_id ?? "", "user_id"));
    if (!member) throw notFound("User");
    const level = parseId(b.access_level ?? "", "access_level");
    // Only owners may make owners.
    if (level > access) throw forbidden();
    const membership = await services.members.addProjectMember(project.id, member.id, level);
    res.status(201).json(memberEntity(member, membership, baseUrl(req)));
  });

  // ---- repository files ----

  router.get("/api/v4/projects/:id/repository/files/:file_path/raw", read, async (req, res) => {
    const user = currentUser(res);
    const project = await loadProject(req, user);
    // GitLab's read_code: anyone who sees a public or internal project, Reporter+ on a private one.
    if (project.visibility === "private" && (await projectAccess(user, project)) < GIT_DOWNLOAD_ACCESS_LEVEL) throw forbidden();
    const filePath = String(req.params.file_path);
    if (!isValidRepoPath(filePath)) throw paramError("file_path should be a valid file path");
    const refParam = req.query.ref;
    const ref = typeof refParam === "string" && refParam !== "" ? refParam : project.defaultBranch;
    const commit = isValidRevision(ref) ? await services.repositories.resolveRef(project.id, ref) : undefined;
    if (!commit) throw notFound("Commit");
    const file = await services.repositories.openFile(project.id, commit, filePath);
    if (!file) throw notFound("File");
    await sendRepositoryFile(res, file, ref);
  });
}
