import { registerUsageMetricsRoutes } from "../usage-metrics/usage-metrics-api.js";
import express from "express";
import type { Request, RequestHandler, Response, Router } from "express";
import pino from "pino";
import type { Logger } from "pino";
import { bearerToken } from "@kasbridge/sdk/auth";
import type { AgentConnectionsSource } from "@kasbridge/sdk/platform-client";
import { DEFAULT_K8S_PROXY_URL, registerCiRestRoutes } from "../ci/ci-api.js";
import { AccessLevel } from "../services/access-levels.js";
import type { PersonalAccessToken } from "../services/personal-access-tokens.js";
import type { PlatformServices } from "../services/platform-services.js";
import type { Project } from "../services/projects.js";
import type { User } from "../services/users.js";
import { guardRequestBody, type BodyLimit } from "./body-limit.js";
import { registerClusterAgentRoutes } from "./cluster-agents-api.js";
import { registerGroupRoutes } from "./groups-api.js";
import { HttpError, forbidden, jsonErrorHandler, notFound, unauthorized } from "./http-errors.js";
import { registerProjectRoutes } from "./projects-api.js";
import { registerProtectedBranchRoutes } from "./protected-branches-api.js";
import type { RestRouteDeps } from "./rest-route-deps.js";
import { registerUserRoutes } from "./users-api.js";
import { registerVulnerabilityRoutes } from "../vulnerabilities/vulnerabilities-api.js";
import { registerWorkspaceRoutes } from "../remote-development/workspaces-api.js";
import { registerWorkspaceLoginRoute } from "../remote-development/workspace-access-api.js";

export interface PlatformApiOptions {
  /** Must be the same instance the in-process PlatformClient uses, so revocations reach KAS. */
  services: PlatformServices;
  /** Where `…/cluster_agents/:agent_id/connections` reads connected agents from (KAS's tracker). */
  connections: AgentConnectionsSource;
  /** Default: silent. */
  logger?: Logger;
  /** Base of `web_url` fields, e.g. "https://platform.example.com". Default: from the request's Host. */
  externalUrl?: string;
  /** Largest accepted request body (after gzip decoding); larger ones get 413. Default 1 MiB. */
  bodyLimitBytes?: number;
  /** How 413 answers name the setting behind bodyLimitBytes. Default "PlatformApiOptions.bodyLimitBytes". */
  bodyLimitSetting?: string;
  /**
   * KAS's Kubernetes API proxy URL as CI jobs reach it (GitLab's `Gitlab::Kas.tunnel_url`): the
   * server of the kubeconfig a new CI job gets. Default "http://127.0.0.1:8154".
   */
  k8sProxyUrl?: string;
}

/** Default PlatformApiOptions.bodyLimitBytes. */
export const DEFAULT_REST_BODY_LIMIT_BYTES = 1024 * 1024;

interface Auth {
  user: User;
  token: PersonalAccessToken;
}

const READ_SCOPES = ["api", "read_api"];
const WRITE_SCOPES = ["api"];

/**
 * GitLab-compatible REST API (`/api/v4/...`) over the platform services, authenticated with a
 * personal access token (`PRIVATE-TOKEN: <pat>` or `Authorization: Bearer <pat>`). Mount it on
 * the platform's HTTP port; it only answers its own routes, so other routers can share the app.
 * The routes of each resource are in their own file (users-api.ts, groups-api.ts, ...); this
 * function authenticates, parses bodies and renders errors for all of them.
 */
export function createPlatformApi(options: PlatformApiOptions): Router {
  const { services, connections } = options;
  const logger = options.logger ?? pino({ level: "silent" });
  const bodyLimit: BodyLimit = {
    maxBytes: options.bodyLimitBytes ?? DEFAULT_REST_BODY_LIMIT_BYTES,
    setting: options.bodyLimitSetting ?? "PlatformApiOptions.bodyLimitBytes",
  };
  const limit = bodyLimit.maxBytes;
  const router = express.Router();
  // Per route, not router.use(): parsing (and its 400s) must not touch requests meant for others.
  const body: RequestHandler[] = [guardRequestBody(bodyLimit), express.json({ limit }), express.urlencoded({ extended: false, limit })];

  const baseUrl = (req: Request) => options.externalUrl ?? `${req.protocol}://${req.get("host") ?? "localhost"}`;

  function authenticate(scopes: readonly string[]): RequestHandler {
    return async (req, res, next) => {
      const secret = tokenFromRequest(req);
      if (!secret) throw unauthorized();
      const found = await services.personalAccessTokens.authenticate(secret);
      if (!found) throw unauthorized();
      if (!found.token.scopes.some((s) => scopes.includes(s))) {
        throw new HttpError(403, {
          error: "insufficient_scope",
          error_description: "The request requires higher privileges than provided by the access token.",
          scope: scopes.join(" "),
          message: "403 Forbidden - insufficient_scope",
        });
      }
      res.locals.auth = found satisfies Auth;
      next();
    };
  }
  const read = authenticate(READ_SCOPES);
  const write = authenticate(WRITE_SCOPES);
  const currentUser = (res: Response) => (res.locals.auth as Auth).user;
  const requireAdmin: RequestHandler = (_req, res, next) => {
    if (!currentUser(res).admin) throw forbidden();
    next();
  };

  async function projectAccess(user: User, project: Project): Promise<number> {
    return user.admin ? AccessLevel.OWNER : services.members.projectAccessLevel(user.id, project);
  }
  /** The `:id` project when the user may see it; 404 otherwise, so private projects stay hidden. */
  async function loadProject(req: Request, user: User): Promise<Project> {
    const project = await services.projects.find(String(req.params.id));
    if (!project || !(await services.members.canReadProject(user, project))) throw notFound("Project");
    return project;
  }

  const deps: RestRouteDeps = {
    services,
    read,
    write,
    body,
    currentUser,
    currentAuth: (res) => res.locals.auth as Auth,
    requireAdmin,
    baseUrl,
    loadProject,
    projectAccess,
  };
  registerUserRoutes(router, deps);
  registerGroupRoutes(router, deps);
  registerProjectRoutes(router, deps);
  registerProtectedBranchRoutes(router, deps);
  registerClusterAgentRoutes(router, { ...deps, connections, logger });
  registerVulnerabilityRoutes(router, deps);
  // kasbridge's CI stand-in and GitLab's GET /job/allowed_agents.
  registerCiRestRoutes(router, { ...deps, k8sProxyUrl: options.k8sProxyUrl ?? DEFAULT_K8S_PROXY_URL });
  // kasbridge's REST for remote development workspaces (GitLab: GraphQL only).
  registerWorkspaceRoutes(router, deps);
  // The browser's login to a workspace host (KAS's workspace proxy sends it here).
  registerWorkspaceLoginRoute(router, deps);
  registerUsageMetricsRoutes(router, deps);

  router.use(jsonErrorHandler(logger, bodyLimit));
  return router;
}

/** `PRIVATE-TOKEN: <t>` or `Authorization: Bearer <t>`, as GitLab accepts personal access tokens. */
function tokenFromRequest(req: Request): string | undefined {
  const privateToken = req.get("private-token");
  if (privateToken) return privateToken.trim();
  return bearerToken(req.get("authorization"));
}

