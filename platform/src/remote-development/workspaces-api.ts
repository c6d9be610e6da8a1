/**
 * kasbridge's REST API for workspaces (GitLab has only GraphQL here):
 * `POST|GET /api/v4/projects/:id/workspaces`, `GET|PUT /api/v4/projects/:id/workspaces/:workspace_id`.
 * Developers of the project create workspaces; a workspace is seen and changed by its owner
 * (and admins), as GitLab's workspace policy allows.
 */
import type { Request, Response, Router } from "express";
import { forbidden, notFound } from "../api/http-errors.js";
import { paginate } from "../api/pagination.js";
import { bodyOf, optionalInteger, parseId, requiredString } from "../api/params.js";
import type { RestRouteDeps } from "../api/rest-route-deps.js";
import { AccessLevel } from "../services/access-levels.js";
import { EDITOR_PORT, WORKSPACE_DATA_PATH } from "./workspace-tools.js";
import { workspaceEndpoints } from "./workspaces.js";
import { checkWorkspaceVariables } from "./workspace-variables.js";
import type { Workspace } from "./workspaces.js";

/** Minimum role to create a workspace in a project (GitLab: Developer). */
export const CREATE_WORKSPACE_ACCESS_LEVEL = AccessLevel.DEVELOPER;

export interface WorkspaceEntity {
  id: number;
  name: string;
  namespace: string;
  project_id: number;
  cluster_agent_id: number;
  user_id: number;
  desired_state: string;
  actual_state: string;
  devfile_ref: string;
  devfile_path: string;
  max_hours_before_termination: number;
  dns_zone: string;
  /** The editor (port 60001), on the project's folder when the workspace cloned one. */
  url: string;
  /** Every exposed endpoint: `https://<port>-<workspace>.<dns_zone><path>`. */
  urls: Array<{ name: string; port: number; url: string }>;
  created_at: string;
  updated_at: string;
}

export function workspaceEntity(w: Workspace): WorkspaceEntity {
  const urls = workspaceEndpoints(w).map((e) => ({ name: e.name, port: e.targetPort, url: `https://${e.targetPort}-${w.name}.${w.dnsZone}${e.path ?? "/"}` }));
  // GitLab's workspace URL: the editor, opened on the cloned project's folder.
  const editor = `https://${EDITOR_PORT}-${w.name}.${w.dnsZone}/`;
  const folder = w.project ? `?folder=${encodeURIComponent(`${WORKSPACE_DATA_PATH}/${w.project.path}`)}` : "";
  return {
    id: w.id,
    name: w.name,
    namespace: w.namespace,
    project_id: w.projectId,
    cluster_agent_id: w.agentId,
    user_id: w.userId,
    desired_state: w.desiredState,
    actual_state: w.actualState,
    devfile_ref: w.devfileRef,
    devfile_path: w.devfilePath,
    max_hours_before_termination: w.maxHoursBeforeTermination,
    dns_zone: w.dnsZone,
    url: editor + folder,
    urls,
    created_at: w.createdAt.toISOString(),
    updated_at: w.updatedAt.toISOString(),
  };
}

export function registerWorkspaceRoutes(router: Router, deps: RestRouteDeps): void {
  const { services, read, write, body, currentUser, loadProject, projectAccess } = deps;

  /** The `:workspace_id` workspace of the `:id` project when the user owns it (or is an admin); 404 otherwise. */
  async function loadWorkspace(req: Request, res: Response): Promise<Workspace> {
    const user = currentUser(res);
    const project = await loadProject(req, user);
    const workspace = await services.workspaces.get(project.id, parseId(req.params.workspace_id, "workspace_id"));
    if (!workspace || (workspace.userId !== user.id && !user.admin)) throw notFound("Workspace");
    return workspace;
  }

  router.post("/api/v4/projects/:id/workspaces", write, ...body, async (req, res) => {
    const user = currentUser(res);
    const project = await loadProject(req, user);
    if ((await projectAccess(user, project)) < CREATE_WORKSPACE_ACCESS_LEVEL) throw forbidden();
    const params = bodyOf(req);
    const workspace = await services.workspaces.create(user.id, project, {
      agentId: parseId(params.cluster_agent_id, "cluster_agent_id"),
      devfileRef: requiredString(params, "devfile_ref"),
      devfilePath: requiredString(params, "devfile_path"),
      maxHoursBeforeTermination: optionalInteger(params, "max_hours_before_termination"),
      repositoryUrl: `${deps.baseUrl(req).replace(/\/+$/, "")}/${project.pathWithNamespace}.git`,
      // Write-only: values go into the workspace's Secrets and are never returned.
      variables: params.variables === undefined ? undefined : checkWorkspaceVariables(params.variables),
    });
    res.status(201).json(workspaceEntity(workspace));
  });

  router.get("/api/v4/projects/:id/workspaces", read, async (req, res) => {
    const user = currentUser(res);
    const project = await loadProject(req, user);
    const workspaces = await services.workspaces.list(project.id, user.admin ? undefined : user.id);
    res.json(paginate(req, res, workspaces).map(workspaceEntity));
  });

  router.get("/api/v4/projects/:id/workspaces/:workspace_id", read, async (req, res) => {
    res.json(workspaceEntity(await loadWorkspace(req, res)));
  });

  router.put("/api/v4/projects/:id/workspaces/:workspace_id", write, ...body, async (req, res) => {
    const workspace = await loadWorkspace(req, res);
    const updated = await services.workspaces.updateDesiredState(workspace, requiredString(bodyOf(req), "desired_state"));
    res.json(workspaceEntity(updated));
  });
}
