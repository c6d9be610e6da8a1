import { createHash } from "node:crypto";
import { toJson } from "@bufbuild/protobuf";
import express from "express";
import type { Request, RequestHandler, Router } from "express";
import pino from "pino";
import type { Logger } from "pino";
import { JwtVerificationError, KAS_API_REQUEST_HEADER, bearerToken, verifyKasApiRequestJwt } from "@kasbridge/sdk/auth";
import { ConfigurationFileSchema } from "@kasbridge/sdk/gen/gitlab/agent/agentcfg/agentcfg_pb";
import { registerProxyUserRoutes } from "../user-access/user-access-api.js";
import { registerModuleRequestRoutes } from "../module-requests/module-request-api.js";
import { registerAgentProjectRoutes } from "../gitops/agent-project-api.js";
import { registerWorkspaceAccessRoutes } from "../remote-development/workspace-access-api.js";
import {
  AGENT_CONFIGURATION_CHANGES_PATH,
  AGENT_CONFIGURATION_PATH,
  AGENT_INFO_PATHS,
  TOKEN_REVOCATIONS_PATH,
  USAGE_METRICS_PATH,
  AUDIT_EVENTS_PATH,
  type TokenRevocation,
} from "@kasbridge/sdk/platform-client";
import type { AuthenticatedAgent } from "../services/agent-tokens.js";
import type { PlatformServices } from "../services/platform-services.js";
import type { Project } from "../services/projects.js";
import { guardRequestBody, type BodyLimit } from "./body-limit.js";
import { HttpError, jsonErrorHandler, notFound, paramError, unauthorized } from "./http-errors.js";
import { parseId } from "./params.js";

export interface InternalApiOptions {
  /** Must be the same instance the REST API uses (revocations are published in-process). */
  services: PlatformServices;
  /** Shared secret of the `Gitlab-Kas-Api-Request` JWT (GitLab's `.gitlab_kas_secret`, decoded). */
  jwtSecret: Uint8Array;
  /** Default: silent. */
  logger?: Logger;
  /** Largest accepted request body (read only after the JWT is checked); larger ones get 413. Default 64 KiB. */
  bodyLimitBytes?: number;
  /** How 413 answers name the setting behind bodyLimitBytes. Default "InternalApiOptions.bodyLimitBytes". */
  bodyLimitSetting?: string;
}

/** Default InternalApiOptions.bodyLimitBytes. */
export const DEFAULT_INTERNAL_API_BODY_LIMIT_BYTES = 64 * 1024;


/**
 * GitLab's internal API for KAS (`/api/v4/internal/...`): every request must carry a valid
 * `Gitlab-Kas-Api-Request` JWT; agent-scoped endpoints also `Authorization: Bearer <agent token>`.
 * Serve it on the platform port alongside createPlatformApi (GitLab serves both from Rails).
 */
export function createInternalApi(options: InternalApiOptions): Router {
  const { services, jwtSecret } = options;
  const logger = options.logger ?? pino({ level: "silent" });
  const bodyLimit: BodyLimit = {
    maxBytes: options.bodyLimitBytes ?? DEFAULT_INTERNAL_API_BODY_LIMIT_BYTES,
    setting: options.bodyLimitSetting ?? "InternalApiOptions.bodyLimitBytes",
  };
  // A batch of audit events is larger than anything else KAS sends (up to 1000 events).
  const auditBodyLimit: BodyLimit = { maxBytes: Math.max(bodyLimit.maxBytes, 4 * 1024 * 1024), setting: bodyLimit.setting };
  const router = express.Router();

  const kasJwt: RequestHandler = async (req, _res, next) => {
    try {
      await verifyKasApiRequestJwt(jwtSecret, req.get(KAS_API_REQUEST_HEADER));
    } catch (err) {
      if (!(err instanceof JwtVerificationError)) throw err;
      // GitLab's exact message; the reason goes to the debug log, never the token itself.
      logger.debug({ reason: err.message, path: req.path }, "KAS JWT refused");
      throw new HttpError(401, { message: "KAS JWT authentication invalid" });
    }
    next();
  };

  async function agentFromRequest(req: Request): Promise<AuthenticatedAgent> {
    const token = bearerToken(req.get("authorization"));
    if (!token) throw unauthorized();
    const found = await services.agentTokens.authenticate(token);
    if (!found) throw unauthorized();
    return found;
  }

  for (const path of AGENT_INFO_PATHS) {
    router.get(path, kasJwt, async (req, res) => {
      const { agent, project, token } = await agentFromRequest(req);
      res.json({
        project_id: project.id,
        agent_id: agent.id,
        agent_name: agent.name,
        gitaly_info: { address: "", token: "", features: {} },
        gitaly_repository: gitalyRepository(project),
        default_branch: project.defaultBranch,
        // kasbridge extension: lets KAS close exactly the tunnels of a revoked token.
        agent_token_id: token.id,
      });
    });
  }

  router.get(TOKEN_REVOCATIONS_PATH, kasJwt, async (req, res) => {
    const page = await services.revocations.feed(feedCursor(req));
    res.json({
      revocations: page.revocations.map(revocationEntity),
      cursor: String(page.cursor),
    });
  });

  router.get(AGENT_CONFIGURATION_PATH, kasJwt, async (req, res) => {
    const raw = req.query.agent_id;
    if (raw === undefined || raw === "") throw paramError("agent_id is missing");
    const agentId = parseId(raw, "agent_id");
    const snapshot = await services.agentConfigs.snapshot(agentId);
    if (!snapshot) throw notFound("Agent");
    res.json({
      agent_id: snapshot.agentId,
      commit_id: snapshot.commitId,
      configuration: toJson(ConfigurationFileSchema, snapshot.config),
    });
  });

  router.get(AGENT_CONFIGURATION_CHANGES_PATH, kasJwt, async (req, res) => {
    const page = await services.agentConfigs.feed(feedCursor(req));
    res.json({
      changes: page.changes.map((c) => ({ agent_id: c.agentId, commit_id: c.commitId })),
      cursor: String(page.cursor),
    });
  });

  // GitLab's usage ping from KAS: deltas of usage events; 204, or 400 naming the bad key.
  router.post(USAGE_METRICS_PATH, kasJwt, guardRequestBody(bodyLimit), express.json({ limit: bodyLimit.maxBytes }), async (req, res) => {
    await services.usageMetrics.record(req.body);
    res.status(204).end();
  });

  // kasbridge extension: KAS's audit events (proxy requests, agent connections); 204, or 400 naming the bad one.
  router.post(AUDIT_EVENTS_PATH, kasJwt, guardRequestBody(auditBodyLimit), express.json({ limit: auditBodyLimit.maxBytes }), async (req, res) => {
    await services.audit.recordFromKas(req.body);
    res.status(204).end();
  });

  // POST …/authorize_proxy_user: a user of KAS's Kubernetes API proxy (user_access).
  registerProxyUserRoutes(router, { services, kasJwt, bodyLimit });
  // GET …/verify_project_access and …/project_info: the projects an agent may read (Flux, GitOps).
  registerAgentProjectRoutes(router, { services, kasJwt, agentFromRequest });
  // …/modules/<module>/<path>: agent modules' requests through KAS (gitlab_access).
  registerModuleRequestRoutes(router, { services, kasJwt, agentFromRequest, bodyLimit });
  // …/kasbridge/workspace_access: KAS's workspace proxy asks who may reach a workspace port.
  registerWorkspaceAccessRoutes(router, { services, kasJwt, bodyLimit });

  router.use(jsonErrorHandler(logger, bodyLimit));
  return router;
}

function revocationEntity(r: TokenRevocation) {
  switch (r.kind) {
    case "agent_token":
      return { kind: r.kind, agent_id: r.agentId, token_id: r.tokenId };
    case "ci_job":
      return { kind: r.kind, job_id: r.jobId };
    case "personal_access_token":
      return { kind: r.kind, user_id: r.userId, token_id: r.tokenId };
    case "user":
      return { kind: r.kind, user_id: r.userId };
  }
}

/** The `after` cursor of a feed request; undefined when absent (start from now). */
function feedCursor(req: Request): number | undefined {
  const raw = req.query.after;
  if (raw === undefined || raw === "") return undefined;
  if (typeof raw !== "string" || !/^[0-9]{1,15}$/.test(raw)) throw paramError("after is invalid");
  return Number(raw);
}

/**
 * The Gitaly repository descriptor GitLab sends for a project (hashed storage layout). We run no
 * Gitaly, but KAS and agentk expect the shape.
 */
export function gitalyRepository(project: Project) {
  const hash = createHash("sha256").update(String(project.id)).digest("hex");
  return {
    storage_name: "default",
    relative_path: `@hashed/${hash.slice(0, 2)}/${hash.slice(2, 4)}/${hash}.git`,
    git_object_directory: "",
    git_alternate_object_directories: [],
    gl_repository: `project-${project.id}`,
    gl_project_path: project.pathWithNamespace,
  };
}
