import type { Request, RequestHandler, Router } from "express";
import type { AuthenticatedAgent } from "../services/agent-tokens.js";
import type { PlatformServices } from "../services/platform-services.js";
import { gitalyRepository } from "../api/internal-api.js";
import { notFound, paramError } from "../api/http-errors.js";
import { projectReadableByAgent } from "./agent-project-access.js";

/** GitLab's `GET /api/v4/internal/kubernetes/verify_project_access?id=<full path>`: 204 yes, 404 no. */
export const VERIFY_PROJECT_ACCESS_PATH = "/api/v4/internal/kubernetes/verify_project_access";
/** GitLab's `GET /api/v4/internal/kubernetes/project_info?id=<full path>`: where the project's repository is. */
export const PROJECT_INFO_PATH = "/api/v4/internal/kubernetes/project_info";

export interface AgentProjectRouteDeps {
  services: PlatformServices;
  /** Checks the KAS JWT. */
  kasJwt: RequestHandler;
  /** The agent of the request's `Authorization: Bearer <agent token>` (throws 401). */
  agentFromRequest(req: Request): Promise<AuthenticatedAgent>;
}

/** The agent-scoped project endpoints of GitLab's internal API that the Flux and GitOps modules use. */
export function registerAgentProjectRoutes(router: Router, deps: AgentProjectRouteDeps): void {
  const { services, kasJwt, agentFromRequest } = deps;

  async function readableProject(req: Request) {
    const agent = await agentFromRequest(req);
    const id = req.query.id;
    if (typeof id !== "string" || id === "") throw paramError("id is missing");
    // Unknown and unreadable look the same, as in GitLab: no probing for private projects.
    const project = await projectReadableByAgent(services, agent, id);
    if (!project) throw notFound("Project");
    return project;
  }

  router.get(VERIFY_PROJECT_ACCESS_PATH, kasJwt, async (req, res) => {
    await readableProject(req);
    res.status(204).end();
  });

  router.get(PROJECT_INFO_PATH, kasJwt, async (req, res) => {
    const project = await readableProject(req);
    res.json({
      project_id: project.id,
      gitaly_info: { address: "", token: "", features: {} },
      gitaly_repository: gitalyRepository(project),
      default_branch: project.defaultBranch,
    });
  });
}
