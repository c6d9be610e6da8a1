/**
 * HTTP routes of the CI jobs stand-in and GitLab's `GET /job/allowed_agents`. The REST API
 * (createPlatformApi) mounts them, so they share its authentication helpers and error handling.
 */
import type { Request, Response, Router } from "express";
import { JOB_ALLOWED_AGENTS_PATH, JOB_TOKEN_HEADER } from "@kasbridge/sdk/platform-client";
import { allowedAgentsForJobEntity, ciJobEntity } from "../api/entities.js";
import { forbidden, notFound, paramError, unauthorized } from "../api/http-errors.js";
import { bodyOf, optionalString, parseId } from "../api/params.js";
import type { RestRouteDeps } from "../api/rest-route-deps.js";
import { AccessLevel } from "../services/access-levels.js";
import { CI_JOB_FINISHED_STATUSES, type CiJobFinishedStatus } from "./ci-jobs.js";
import { generateKubeconfig } from "./kubeconfig.js";

/** Where KAS's Kubernetes API proxy listens by default (GitLab KAS's port 8154). */
export const DEFAULT_K8S_PROXY_URL = "http://127.0.0.1:8154";
/** Minimum role to start and finish CI jobs of a project (GitLab: Developer runs pipelines). */
export const RUN_CI_JOBS_ACCESS_LEVEL = AccessLevel.DEVELOPER;

/** What the REST router lends the CI routes. */
export interface CiRestRoutesDeps extends RestRouteDeps {
  /** KAS's Kubernetes API proxy URL, the kubeconfig's server. */
  k8sProxyUrl: string;
}

/**
 * kasbridge's CI stand-in (`POST /projects/:id/jobs`, `POST /projects/:id/jobs/:job_id/finish`)
 * and GitLab's `GET /job/allowed_agents`.
 */
export function registerCiRestRoutes(router: Router, deps: CiRestRoutesDeps): void {
  const { services, write, body, currentUser } = deps;

  async function loadProjectToRun(req: Request, res: Response) {
    const user = currentUser(res);
    const project = await deps.loadProject(req, user);
    if ((await deps.projectAccess(user, project)) < RUN_CI_JOBS_ACCESS_LEVEL) throw forbidden();
    return { user, project };
  }

  router.post("/api/v4/projects/:id/jobs", write, ...body, async (req, res) => {
    const { user, project } = await loadProjectToRun(req, res);
    const b = bodyOf(req);
    const { job, token } = await services.ciJobs.create(project.id, user.id, {
      ref: optionalString(b, "ref"),
      environment: optionalString(b, "environment"),
      environmentTier: optionalString(b, "environment_tier"),
    });
    const auth = { job, project, user, environment: job.environment };
    const agents = await services.ciJobs.allowedAgentsOf(auth);
    const kubeconfig = generateKubeconfig({
      proxyUrl: deps.k8sProxyUrl,
      jobToken: token,
      agents: agents.map((a) => ({
        agentId: a.agent.id,
        agentName: a.agent.name,
        configProjectPath: a.configProject.pathWithNamespace,
        defaultNamespace: typeof a.configuration.default_namespace === "string" ? a.configuration.default_namespace : undefined,
      })),
    });
    // The only time the token leaves the platform.
    res.status(201).json({ ...ciJobEntity(job), token, kubeconfig: kubeconfig ?? null });
  });

  router.post("/api/v4/projects/:id/jobs/:job_id/finish", write, ...body, async (req, res) => {
    const { project } = await loadProjectToRun(req, res);
    const jobId = parseId(req.params.job_id, "job_id");
    const status = optionalString(bodyOf(req), "status") ?? "success";
    if (!(CI_JOB_FINISHED_STATUSES as readonly string[]).includes(status)) throw paramError("status does not have a valid value");
    if (!(await services.ciJobs.get(project.id, jobId))) throw notFound("Job");
    res.json(ciJobEntity(await services.ciJobs.finish(project.id, jobId, status as CiJobFinishedStatus)));
  });

  router.get(JOB_ALLOWED_AGENTS_PATH, async (req, res) => {
    const token = req.get(JOB_TOKEN_HEADER)?.trim();
    if (!token) throw unauthorized();
    const allowed = await services.ciJobs.allowedAgentsForJob(token);
    if (!allowed) throw unauthorized();
    res.json(allowedAgentsForJobEntity(allowed));
  });
}
