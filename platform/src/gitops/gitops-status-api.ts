import type { Request, RequestHandler, Response, Router } from "express";
import type { Agent } from "../services/agents.js";
import type { PlatformServices } from "../services/platform-services.js";
import { listGitopsStatus } from "./gitops-status.js";

export interface GitopsStatusRouteDeps {
  services: PlatformServices;
  read: RequestHandler;
  /** The `:agent_id` agent of the `:id` project when the user may read agents (404 otherwise). */
  loadAgentForRead(req: Request, res: Response): Promise<{ agent: Agent }>;
}

/**
 * kasbridge extension `GET /api/v4/projects/:id/cluster_agents/:agent_id/gitops`: the agent's
 * built-in GitOps sync status per manifest project (commit seen, commit applied, objects, last
 * error), as the agent last reported it.
 */
export function registerGitopsStatusRoutes(router: Router, deps: GitopsStatusRouteDeps): void {
  router.get("/api/v4/projects/:id/cluster_agents/:agent_id/gitops", deps.read, async (req, res) => {
    const { agent } = await deps.loadAgentForRead(req, res);
    res.json({ agent_id: agent.id, manifest_projects: await listGitopsStatus(deps.services.store.knex, agent.id) });
  });
}
