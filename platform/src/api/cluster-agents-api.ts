/**
 * GitLab's cluster agents API (`/projects/:id/cluster_agents`, their tokens) and kasbridge's
 * `…/connections` (the agent's connected processes, from KAS's agent tracker); the REST API
 * (createPlatformApi) mounts these routes with its authentication and error handling.
 */
import type { Request, Response, Router } from "express";
import type { Logger } from "pino";
import type { AgentConnectionsSource } from "@kasbridge/sdk/platform-client";
import { registerAuditRoutes } from "../audit/audit-api.js";
import type { AuditEventInput } from "../audit/audit-trail.js";
import { AccessLevel } from "../services/access-levels.js";
import type { Project } from "../services/projects.js";
import type { User } from "../services/users.js";
import { agentConnectionEntity, agentEntity, agentHealthEntity, agentTokenEntity } from "./entities.js";
import { HttpError, forbidden, notFound } from "./http-errors.js";
import { paginate } from "./pagination.js";
import { bodyOf, optionalString, parseId, requiredString } from "./params.js";
import type { RestRouteDeps } from "./rest-route-deps.js";
import { registerGitopsStatusRoutes } from "../gitops/gitops-status-api.js";
import { listGitopsStatus } from "../gitops/gitops-status.js";

/**
 * Minimum role to read a project's agents and tokens. GitLab grants `read_cluster_agent` from
 * Developer up (ProjectPolicy; docs: "You must have at least the Developer role").
 */
export const READ_AGENTS_ACCESS_LEVEL = AccessLevel.DEVELOPER;
/** Minimum role to register/delete agents and create/revoke their tokens (GitLab: Maintainer). */
export const MANAGE_AGENTS_ACCESS_LEVEL = AccessLevel.MAINTAINER;

export function registerClusterAgentRoutes(
  router: Router,
  deps: RestRouteDeps & { connections: AgentConnectionsSource; logger: Logger },
): void {
  const { services, read, write, body, currentUser, loadProject, projectAccess, connections, logger } = deps;

  /** Loads the agent of the `:id` project, with the role check GitLab applies to reads. */
  async function loadAgentForRead(req: Request, res: Response) {
    const user = currentUser(res);
    const project = await loadProject(req, user);
    const agentId = parseId(req.params.agent_id, "agent_id");
    if ((await projectAccess(user, project)) < READ_AGENTS_ACCESS_LEVEL) throw notFound();
    const agent = await services.agents.get(project.id, agentId);
    if (!agent) throw notFound();
    return { user, project, agent };
  }

  async function requireManage(user: User, project: Project): Promise<void> {
    if ((await projectAccess(user, project)) < MANAGE_AGENTS_ACCESS_LEVEL) throw forbidden();
  }

  router.get("/api/v4/projects/:id/cluster_agents", read, async (req, res) => {
    const user = currentUser(res);
    const project = await loadProject(req, user);
    if ((await projectAccess(user, project)) < READ_AGENTS_ACCESS_LEVEL) throw notFound("ClusterAgents");
    const agents = paginate(req, res, await services.agents.list(project.id));
    const configs = await services.agentConfigs.getMany(agents.map((a) => a.id));
    res.json(agents.map((a) => agentEntity(a, project, configs.get(a.id))));
  });

  router.post("/api/v4/projects/:id/cluster_agents", write, ...body, async (req, res) => {
    const user = currentUser(res);
    const project = await loadProject(req, user);
    await requireManage(user, project);
    const name = requiredString(bodyOf(req), "name");
    const agent = await services.agents.create(project.id, name, user.id);
    res.status(201).json(agentEntity(agent, project, await services.agentConfigs.get(agent.id)));
  });

  router.get("/api/v4/projects/:id/cluster_agents/:agent_id", read, async (req, res) => {
    const { project, agent } = await loadAgentForRead(req, res);
    res.json(agentEntity(agent, project, await services.agentConfigs.get(agent.id)));
  });

  router.delete("/api/v4/projects/:id/cluster_agents/:agent_id", write, async (req, res) => {
    const user = currentUser(res);
    const project = await loadProject(req, user);
    await requireManage(user, project);
    if (!(await services.agents.delete(project.id, parseId(req.params.agent_id, "agent_id")))) throw notFound();
    res.status(204).end();
  });

  router.get("/api/v4/projects/:id/cluster_agents/:agent_id/tokens", read, async (req, res) => {
    const { agent } = await loadAgentForRead(req, res);
    const tokens = await services.agentTokens.list(agent.id);
    res.json(paginate(req, res, tokens).map(agentTokenEntity));
  });

  router.post("/api/v4/projects/:id/cluster_agents/:agent_id/tokens", write, ...body, async (req, res) => {
    const user = currentUser(res);
    const project = await loadProject(req, user);
    await requireManage(user, project);
    const agent = await services.agents.get(project.id, parseId(req.params.agent_id, "agent_id"));
    if (!agent) throw notFound();
    const b = bodyOf(req);
    const name = requiredString(b, "name");
    const { token, secret } = await services.agentTokens.create(
      agent.id,
      { name, description: optionalString(b, "description") },
      user.id,
    );
    await services.audit.record(tokenEvent("token_created", agent.id, user, token.id, token.name));
    // The only time the plaintext leaves the platform.
    res.status(201).json({ ...agentTokenEntity(token), token: secret });
  });

  router.get("/api/v4/projects/:id/cluster_agents/:agent_id/tokens/:token_id", read, async (req, res) => {
    const { agent } = await loadAgentForRead(req, res);
    const token = await services.agentTokens.get(agent.id, parseId(req.params.token_id, "token_id"));
    // GitLab answers 404 for a revoked token here.
    if (!token || token.status !== "active") throw notFound();
    res.json(agentTokenEntity(token));
  });

  router.delete("/api/v4/projects/:id/cluster_agents/:agent_id/tokens/:token_id", write, async (req, res) => {
    const user = currentUser(res);
    const project = await loadProject(req, user);
    await requireManage(user, project);
    const agent = await services.agents.get(project.id, parseId(req.params.agent_id, "agent_id"));
    if (!agent) throw notFound();
    const { token: revoked, revokedNow } = await services.agentTokens.revoke(agent.id, parseId(req.params.token_id, "token_id"));
    // A repeated DELETE changes nothing and is not a second revocation.
    if (revokedNow) await services.audit.record(tokenEvent("token_revoked", agent.id, user, revoked.id, revoked.name));
    res.status(204).end();
  });

  /** The agent's connected processes from KAS's tracker; undefined when the client left. Throws 503 when KAS cannot say. */
  async function listConnections(agentId: number, res: Response) {
    const abort = new AbortController();
    res.on("close", () => abort.abort());
    try {
      return await connections.listConnections(agentId, abort.signal);
    } catch (err) {
      if (abort.signal.aborted) return undefined;
      logger.warn({ err, agentId }, "cannot list agent connections");
      throw new HttpError(503, { message: "503 Service Unavailable - agent connections are unavailable" });
    }
  }

  // kasbridge extension: the agent's connected processes, from KAS's agent tracker.
  // kasbridge extension: the agent's GitOps sync status per manifest project.
  registerGitopsStatusRoutes(router, { services, read, loadAgentForRead });

  router.get("/api/v4/projects/:id/cluster_agents/:agent_id/connections", read, async (req, res) => {
    const { agent } = await loadAgentForRead(req, res);
    const list = await listConnections(agent.id, res);
    if (list) res.json(list.map(agentConnectionEntity));
  });

  registerAuditRoutes(router, { ...deps, loadAgentForRead });

  // kasbridge extension: the agent's health in one answer (GitLab shows parts of it in its UI).
  router.get("/api/v4/projects/:id/cluster_agents/:agent_id/health", read, async (req, res) => {
    const { project, agent } = await loadAgentForRead(req, res);
    const list = await listConnections(agent.id, res);
    if (!list) return;
    const [config, tokens, gitops] = await Promise.all([
      services.agentConfigs.get(agent.id),
      services.agentTokens.list(agent.id),
      listGitopsStatus(services.store.knex, agent.id),
    ]);
    res.json(agentHealthEntity(agent, project, list, config, tokens, gitops));
  });
}

/** Agent activity: a token created or revoked, by whom (never the token itself). */
function tokenEvent(kind: "token_created" | "token_revoked", agentId: number, user: User, tokenId: number, tokenName: string): AuditEventInput {
  return {
    kind,
    agent_id: agentId,
    actor: { kind: "user", user_id: user.id, username: user.username },
    impersonated: null,
    request: null,
    details: { token_id: tokenId, token_name: tokenName },
    error: null,
  };
}
