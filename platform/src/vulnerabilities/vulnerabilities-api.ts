/**
 * GitLab's Vulnerabilities API (ee/lib/api/vulnerabilities.rb) for operational container scanning:
 *
 * - `GET /projects/:id/vulnerabilities`: most severe first, paginated; kasbridge adds the filters
 *   GitLab's GraphQL has: `severity`, `state`, `cluster_agent_id`, `report_type` (lists);
 * - `GET /vulnerabilities/:id`;
 * - `POST /vulnerabilities/:id/confirm|dismiss|resolve|revert` (optional `comment`): 201 with the
 *   vulnerability, 304 when it is in that state already;
 * - kasbridge's `POST|GET /projects/:id/cluster_agents/:agent_id/vulnerability_scans`: ask the
 *   agent for a scan now (`namespaces` optional) and list the requests.
 *
 * Reading needs GitLab's `read_security_resource` (Developer), changing `admin_vulnerability`.
 */
import type { Request, Response, Router } from "express";
import { notFound as httpNotFound } from "../api/http-errors.js";
import { forbidden, paramError } from "../api/http-errors.js";
import { projectIdentityEntity } from "../api/entities.js";
import { paginate } from "../api/pagination.js";
import { bodyOf, optionalString, parseId, stringArray } from "../api/params.js";
import type { RestRouteDeps } from "../api/rest-route-deps.js";
import { AccessLevel } from "../services/access-levels.js";
import type { Project } from "../services/projects.js";
import type { User } from "../services/users.js";
import { ADMIN_VULNERABILITY_ACCESS_LEVEL } from "./starboard-module.js";
import { SEVERITIES } from "./starboard-report.js";
import { REPORT_TYPE, STATES, type ScanRequest, type StateAction, type Vulnerability } from "./vulnerabilities.js";

/** GitLab's `read_security_resource`: Developer and up. */
export const READ_VULNERABILITY_ACCESS_LEVEL = AccessLevel.DEVELOPER;

const iso = (d: Date | null) => (d ? d.toISOString() : null);

/** GitLab's API::Entities::Vulnerability, with its finding. */
export function vulnerabilityEntity(v: Vulnerability, project: Project) {
  return {
    id: v.id,
    title: v.title,
    description: v.description,
    state: v.state,
    severity: v.severity,
    confidence: v.confidence,
    report_type: v.reportType,
    project: projectIdentityEntity(project),
    finding: {
      uuid: v.findingUuid,
      name: v.title,
      report_type: v.reportType,
      severity: v.severity,
      confidence: v.confidence,
      message: v.message,
      description: v.description,
      solution: v.solution,
      location: v.location,
      location_fingerprint: v.locationFingerprint,
      project_fingerprint: v.projectFingerprint,
      metadata_version: v.metadataVersion,
      identifiers: v.identifiers,
      links: v.links,
      scanner: v.scanner,
      last_detected_at: iso(v.lastDetectedAt),
    },
    cluster_agent_id: v.clusterAgentId === null ? null : String(v.clusterAgentId),
    resolved_on_default_branch: v.resolvedOnDefaultBranch,
    project_default_branch: project.defaultBranch,
    author_id: v.authorId,
    updated_by_id: null,
    last_edited_by_id: null,
    resolved_by_id: v.resolvedById,
    dismissed_by_id: v.dismissedById,
    confirmed_by_id: v.confirmedById,
    due_date: null,
    created_at: iso(v.createdAt),
    updated_at: iso(v.updatedAt),
    resolved_at: iso(v.resolvedAt),
    dismissed_at: iso(v.dismissedAt),
    confirmed_at: iso(v.confirmedAt),
    last_edited_at: null,
    start_date: null,
  };
}

export function scanRequestEntity(r: ScanRequest) {
  return {
    id: r.id,
    agent_id: r.agentId,
    namespaces: r.namespaces,
    status: r.pickedUpAt ? "picked_up" : "pending",
    requested_by_id: r.requestedById,
    requested_at: iso(r.requestedAt),
    picked_up_at: iso(r.pickedUpAt),
  };
}

const ACTIONS: readonly StateAction[] = ["confirm", "dismiss", "resolve", "revert"];
const NAMESPACE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

export function registerVulnerabilityRoutes(router: Router, deps: RestRouteDeps): void {
  const { services, read, write, body, currentUser, loadProject, projectAccess } = deps;
  const vulnerabilities = services.vulnerabilities;

  async function requireLevel(user: User, project: Project, level: number): Promise<void> {
    if ((await projectAccess(user, project)) < level) throw forbidden();
  }

  /** The `:id` vulnerability when the user may read it: 404 when its project is hidden, 403 without the role. */
  async function loadVulnerability(req: Request, res: Response, level: number) {
    const user = currentUser(res);
    const vulnerability = await vulnerabilities.get(parseId(req.params.id, "id"));
    const project = vulnerability && (await services.projects.get(vulnerability.projectId));
    if (!vulnerability || !project || !(await services.members.canReadProject(user, project))) throw httpNotFound("Vulnerability");
    await requireLevel(user, project, level);
    return { user, vulnerability, project };
  }

  router.get("/api/v4/projects/:id/vulnerabilities", read, async (req, res) => {
    const user = currentUser(res);
    const project = await loadProject(req, user);
    await requireLevel(user, project, READ_VULNERABILITY_ACCESS_LEVEL);
    const query = req.query as Record<string, unknown>;
    const severities = allowed(stringArray(query, "severity"), SEVERITIES, "severity");
    const states = allowed(stringArray(query, "state"), STATES, "state");
    const reportTypes = allowed(stringArray(query, "report_type"), [REPORT_TYPE], "report_type");
    const agentIds = stringArray(query, "cluster_agent_id")?.map((id) => parseAgentId(id));
    const list = await vulnerabilities.list(project.id, { severities, states, reportTypes, clusterAgentIds: agentIds });
    res.json(paginate(req, res, list).map((v) => vulnerabilityEntity(v, project)));
  });

  router.get("/api/v4/vulnerabilities/:id", read, async (req, res) => {
    const { vulnerability, project } = await loadVulnerability(req, res, READ_VULNERABILITY_ACCESS_LEVEL);
    res.json(vulnerabilityEntity(vulnerability, project));
  });

  for (const action of ACTIONS) {
    router.post(`/api/v4/vulnerabilities/:id/${action}`, write, ...body, async (req, res) => {
      const { user, vulnerability, project } = await loadVulnerability(req, res, ADMIN_VULNERABILITY_ACCESS_LEVEL);
      const comment = optionalString(bodyOf(req), "comment");
      if (comment !== undefined && comment.length > 50_000) throw paramError("comment is too long (maximum is 50000 characters)");
      const { vulnerability: changed, changed: didChange } = await vulnerabilities.transition(vulnerability.id, action, user.id, comment);
      // GitLab's not_modified! when the vulnerability is in that state already.
      if (!didChange) {
        res.status(304).end();
        return;
      }
      res.status(201).json(vulnerabilityEntity(changed, project));
    });
  }

  /** The `:agent_id` agent of the `:id` project, for a user who may manage its vulnerabilities. */
  async function loadAgent(req: Request, res: Response, level: number) {
    const user = currentUser(res);
    const project = await loadProject(req, user);
    await requireLevel(user, project, level);
    const agent = await services.agents.get(project.id, parseId(req.params.agent_id, "agent_id"));
    if (!agent) throw httpNotFound("Agent");
    return { user, agent };
  }

  router.post("/api/v4/projects/:id/cluster_agents/:agent_id/vulnerability_scans", write, ...body, async (req, res) => {
    const { user, agent } = await loadAgent(req, res, ADMIN_VULNERABILITY_ACCESS_LEVEL);
    const namespaces = stringArray(bodyOf(req), "namespaces") ?? [];
    const bad = namespaces.find((ns) => !NAMESPACE.test(ns) || ns.length > 63);
    if (bad !== undefined) throw paramError(`namespaces: ${JSON.stringify(bad)} is not a namespace name`);
    const request = await vulnerabilities.requestScan(agent.id, [...new Set(namespaces)], user.id);
    res.status(201).json(scanRequestEntity(request));
  });

  router.get("/api/v4/projects/:id/cluster_agents/:agent_id/vulnerability_scans", read, async (req, res) => {
    const { agent } = await loadAgent(req, res, READ_VULNERABILITY_ACCESS_LEVEL);
    res.json(paginate(req, res, await vulnerabilities.listScanRequests(agent.id)).map(scanRequestEntity));
  });
}

function allowed(values: string[] | undefined, known: readonly string[], name: string): string[] | undefined {
  const bad = values?.find((v) => !known.includes(v));
  if (bad !== undefined) throw paramError(`${name} does not have a valid value (${known.join(", ")})`);
  return values;
}

function parseAgentId(text: string): number {
  // GitLab's GraphQL takes global ids (gid://gitlab/Clusters::Agent/7); plain ids too.
  const m = /^(?:gid:\/\/gitlab\/Clusters::Agent\/)?([0-9]+)$/.exec(text);
  if (!m) throw paramError("cluster_agent_id is invalid");
  return Number(m[1]);
}
