import express from "express";
import type { Request, RequestHandler, Response, Router } from "express";
import pino from "pino";
import type { Logger } from "pino";
import { DEFAULT_K8S_PROXY_URL, registerCiRestRoutes } from "../ci/ci-api.js";
import type { AgentConnectionsSource } from "@kasbridge/sdk/platform-client";
import { GIT_DOWNLOAD_ACCESS_LEVEL } from "../git/git-http-router.js";
import { isValidRepoPath, isValidRevision } from "../git/git-names.js";
import { sendRepositoryFile } from "../git/send-file.js";
import { AccessLevel } from "../services/access-levels.js";
import { ServiceError } from "../services/errors.js";
import type { Namespace } from "../services/namespaces.js";
import type { PersonalAccessToken } from "../services/personal-access-tokens.js";
import type { PlatformServices } from "../services/platform-services.js";
import type { Project } from "../services/projects.js";
import type { User } from "../services/users.js";
import { parseVisibility } from "../services/validation.js";
import {
  agentConnectionEntity,
  agentEntity,
  agentTokenEntity,
  groupEntity,
  memberEntity,
  personalAccessTokenEntity,
  projectEntity,
  userBasicEntity,
  userEntity,
} from "./entities.js";
import { guardRequestBody, type BodyLimit } from "./body-limit.js";
import { HttpError, forbidden, jsonErrorHandler, notFound, paramError, unauthorized } from "./http-errors.js";
import { paginate } from "./pagination.js";
import { registerProtectedBranchRoutes } from "./protected-branches-api.js";
import { bodyOf, optionalBoolean, optionalId, optionalString, parseId, requiredString, stringArray } from "./params.js";
import { bearerToken } from "@kasbridge/sdk/auth";

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

/**
 * Minimum role to read a project's agents and tokens. GitLab grants `read_cluster_agent` from
 * Developer up (ProjectPolicy; docs: "You must have at least the Developer role").
 */
export const READ_AGENTS_ACCESS_LEVEL = AccessLevel.DEVELOPER;
/** Minimum role to register/delete agents and create/revoke their tokens (GitLab: Maintainer). */
export const MANAGE_AGENTS_ACCESS_LEVEL = AccessLevel.MAINTAINER;
/** Minimum group role to create a project in it (GitLab's default project_creation_level). */
const CREATE_PROJECT_IN_GROUP_ACCESS_LEVEL = AccessLevel.DEVELOPER;
/** Minimum parent-group role to create a subgroup (GitLab's default subgroup_creation_level). */
const CREATE_SUBGROUP_ACCESS_LEVEL = AccessLevel.MAINTAINER;

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
  async function groupAccess(user: User, group: Namespace): Promise<number> {
    return user.admin ? AccessLevel.OWNER : services.members.groupAccessLevel(user.id, group);
  }

  /** The `:id` project when the user may see it; 404 otherwise, so private projects stay hidden. */
  async function loadProject(req: Request, user: User): Promise<Project> {
    const project = await services.projects.find(String(req.params.id));
    if (!project || !(await services.members.canReadProject(user, project))) throw notFound("Project");
    return project;
  }

  async function loadGroup(idOrPath: string, user: User): Promise<Namespace> {
    const group = /^[0-9]+$/.test(idOrPath)
      ? await services.namespaces.get(parseId(idOrPath, "id"))
      : await services.namespaces.getByFullPath(idOrPath);
    if (!group || group.kind !== "group" || !(await services.members.canReadGroup(user, group))) throw notFound("Group");
    return group;
  }

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

  // ---- users ----

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
    const { token, user } = res.locals.auth as Auth;
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

  // ---- groups ----

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

  // ---- projects ----

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

  // ---- protected branches ----

  registerProtectedBranchRoutes(router, { services, read, write, body, currentUser, loadProject, projectAccess });

  // ---- cluster agents ----

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
    await services.agentTokens.revoke(agent.id, parseId(req.params.token_id, "token_id"));
    res.status(204).end();
  });

  // kasbridge extension: the agent's connected processes, from KAS's agent tracker.
  router.get("/api/v4/projects/:id/cluster_agents/:agent_id/connections", read, async (req, res) => {
    const { agent } = await loadAgentForRead(req, res);
    const abort = new AbortController();
    res.on("close", () => abort.abort());
    let list;
    try {
      list = await connections.listConnections(agent.id, abort.signal);
    } catch (err) {
      if (abort.signal.aborted) return;
      logger.warn({ err, agentId: agent.id }, "cannot list agent connections");
      throw new HttpError(503, { message: "503 Service Unavailable - agent connections are unavailable" });
    }
    res.json(list.map(agentConnectionEntity));
  });

  // ---- CI jobs (kasbridge's CI stand-in) and GitLab's GET /job/allowed_agents ----

  registerCiRestRoutes(router, {
    services,
    read,
    write,
    body,
    currentUser,
    loadProject,
    projectAccess,
    k8sProxyUrl: options.k8sProxyUrl ?? DEFAULT_K8S_PROXY_URL,
  });

  router.use(jsonErrorHandler(logger, bodyLimit));
  return router;
}

/** `PRIVATE-TOKEN: <t>` or `Authorization: Bearer <t>`, as GitLab accepts personal access tokens. */
function tokenFromRequest(req: Request): string | undefined {
  const privateToken = req.get("private-token");
  if (privateToken) return privateToken.trim();
  return bearerToken(req.get("authorization"));
}

