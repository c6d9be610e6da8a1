import { fromJson, type JsonValue } from "@bufbuild/protobuf";
import express, { type Request, type RequestHandler, type Router } from "express";
import { ManifestProjectStatusSchema } from "@kasbridge/sdk/gen/kasbridge/gitops/v1/sync_status_pb";
import type { AuthenticatedAgent } from "../services/agent-tokens.js";
import type { PlatformServices } from "../services/platform-services.js";
import { gitalyRepository } from "../api/internal-api.js";
import { guardRequestBody } from "../api/body-limit.js";
import { HttpError, notFound, paramError } from "../api/http-errors.js";
import { parseId } from "../api/params.js";
import {
  GITOPS_STATUS_PATH,
  PROJECT_INFO_PATH,
  REPOSITORY_BLOB_PATH,
  REPOSITORY_COMMIT_PATH,
  REPOSITORY_TREE_PATH,
  RepositoryFileTooLargeError,
  VERIFY_PROJECT_ACCESS_PATH,
} from "@kasbridge/sdk/platform-client";
import { projectReadableByAgent } from "./agent-project-access.js";
import { recordGitopsStatus } from "./gitops-status.js";
import { readCapped } from "./repository-reads.js";

/** Largest GitOps status report (up to 1000 objects). */
const GITOPS_STATUS_MAX_BYTES = 1024 * 1024;

export interface AgentProjectRouteDeps {
  services: PlatformServices;
  /** Checks the KAS JWT. */
  kasJwt: RequestHandler;
  /** The agent of the request's `Authorization: Bearer <agent token>` (throws 401). */
  agentFromRequest(req: Request): Promise<AuthenticatedAgent>;
}

/** The internal API endpoints the Flux and GitOps modules of KAS use. */
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

  const text = (req: Request, name: string): string => {
    const v = req.query[name];
    if (typeof v !== "string" || v === "") throw paramError(`${name} is missing`);
    return v;
  };

  router.get(REPOSITORY_COMMIT_PATH, kasJwt, async (req, res) => {
    const commit = await services.repositories.resolveRef(parseId(req.query.project_id, "project_id"), text(req, "revision"));
    if (!commit) throw notFound("Commit");
    res.json({ commit_id: commit });
  });

  router.get(REPOSITORY_TREE_PATH, kasJwt, async (req, res) => {
    const files = await services.repositories.listFiles(parseId(req.query.project_id, "project_id"), text(req, "commit"));
    if (!files) throw notFound("Commit");
    res.json({ paths: files.map((f) => f.path) });
  });

  router.get(REPOSITORY_BLOB_PATH, kasJwt, async (req, res) => {
    const path = text(req, "path");
    const maxBytes = parseId(req.query.max_bytes, "max_bytes");
    const file = await services.repositories.openFile(parseId(req.query.project_id, "project_id"), text(req, "commit"), path);
    if (!file) throw notFound("File");
    if (file.size > maxBytes) throw new HttpError(413, { message: `file ${path} is larger than ${maxBytes} bytes` });
    let data: Buffer;
    try {
      data = await readCapped(file.stream(), path, maxBytes);
    } catch (err) {
      if (err instanceof RepositoryFileTooLargeError) throw new HttpError(413, { message: err.message });
      throw err;
    }
    res.type("application/octet-stream").send(data);
  });

  const statusLimit = { maxBytes: GITOPS_STATUS_MAX_BYTES, setting: "the GitOps status report limit (1 MiB)" };
  router.post(GITOPS_STATUS_PATH, kasJwt, guardRequestBody(statusLimit), express.json({ limit: GITOPS_STATUS_MAX_BYTES }), async (req, res) => {
    const { agent } = await agentFromRequest(req);
    let status;
    try {
      status = fromJson(ManifestProjectStatusSchema, (req.body as { status?: JsonValue })?.status ?? null);
    } catch (err) {
      throw paramError(`status is invalid: ${(err as Error).message}`);
    }
    if (status.project === "") throw paramError("status.project is missing");
    await recordGitopsStatus(services.store.knex, agent.id, status, new Date());
    res.status(204).end();
  });
}
