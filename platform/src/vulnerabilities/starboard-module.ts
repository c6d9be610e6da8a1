/**
 * The platform's half of starboard_vulnerability: what GitLab's Rails answers under
 * `/api/v4/internal/kubernetes/modules/starboard_vulnerability/` (ee/lib/ee/api/internal/kubernetes.rb),
 * reached through KAS (gitlab_access) with the agent's token:
 *
 * - `PUT /`: one vulnerability; 200 `{"uuid"}` (created, or the finding already known);
 * - `POST /scan_result`: `{uuids}` resolves the agent's active findings not listed (kasbridge: only
 *   in `namespaces`, when the agent sends them);
 * - `GET /policies_configuration`: 404, as GitLab answers a project without security policies;
 * - `GET /scan_requests` (kasbridge's): the scans users asked for, handed to the agent's leader once.
 *
 * As in GitLab, the agent acts as the user who registered it, who must be allowed to manage the
 * project's vulnerabilities.
 */
import type { Logger } from "pino";
import type { AgentModuleHandler, AgentModuleRequest, AgentModuleResponse } from "../module-requests/module-requests.js";
import { AccessLevel } from "../services/access-levels.js";
import { ServiceError } from "../services/errors.js";
import type { MemberService } from "../services/members.js";
import type { UserService } from "../services/users.js";
import { ReportParamsError, parseScanResult, parseStarboardReport } from "./starboard-report.js";
import type { VulnerabilityMetrics } from "./vulnerability-metrics.js";
import type { VulnerabilityService } from "./vulnerabilities.js";

export const STARBOARD_VULNERABILITY_MODULE = "starboard_vulnerability";
/**
 * GitLab's `admin_vulnerability`: Developer and up in GitLab 16 (17.0 moved it to Maintainer and
 * up). Needed to change a vulnerability's state, and by the agent's creator for its reports.
 */
export const ADMIN_VULNERABILITY_ACCESS_LEVEL = AccessLevel.DEVELOPER;

export interface StarboardModuleDeps {
  vulnerabilities: VulnerabilityService;
  users: Pick<UserService, "get">;
  members: Pick<MemberService, "projectAccessLevel">;
  metrics?: VulnerabilityMetrics;
  logger: Logger;
}

const json = (status: number, body: unknown): AgentModuleResponse => ({ status, json: body });
const notFound = () => json(404, { message: "404 Not Found" });

export function starboardVulnerabilityModule(deps: StarboardModuleDeps): AgentModuleHandler {
  const { vulnerabilities, logger } = deps;

  /** GitLab: `can?(agent.created_by_user, :admin_vulnerability, project)`. */
  async function authorized(request: AgentModuleRequest): Promise<boolean> {
    const creatorId = request.agent.agent.createdByUserId;
    const creator = creatorId === null ? undefined : await deps.users.get(creatorId);
    if (!creator || creator.state !== "active") return false;
    if (creator.admin) return true;
    return (await deps.members.projectAccessLevel(creator.id, request.agent.project)) >= ADMIN_VULNERABILITY_ACCESS_LEVEL;
  }

  return async (request) => {
    const { method, path } = request;
    const agent = request.agent.agent;
    if (method === "GET" && path === "/policies_configuration") return notFound();
    if (method === "GET" && path === "/scan_requests") {
      const taken = await vulnerabilities.takeScanRequests(agent.id);
      return json(200, { scan_requests: taken.map((r) => ({ id: r.id, namespaces: r.namespaces })) });
    }
    const put = method === "PUT" && path === "/";
    const scanResult = method === "POST" && path === "/scan_result";
    if (!put && !scanResult) return notFound();
    if (!(await authorized(request))) {
      deps.metrics?.reported("rejected");
      return json(403, { message: "403 Forbidden" });
    }
    try {
      if (put) {
        const outcome = await vulnerabilities.reportFromAgent(agent, parseStarboardReport(request.body));
        deps.metrics?.reported(outcome.created ? "created" : outcome.reopened ? "reopened" : "existing");
        return json(200, { uuid: outcome.vulnerability.findingUuid });
      }
      const { uuids, namespaces } = parseScanResult(request.body);
      const resolved = await vulnerabilities.resolveUndetected(agent, uuids, namespaces);
      deps.metrics?.scanResult(namespaces ? "namespaces" : "all", resolved);
      logger.info({ agentId: agent.id, reported: uuids.length, namespaces: namespaces ?? "all", resolved }, "scan result: resolved what the scan no longer saw");
      return json(200, { resolved });
    } catch (err) {
      if (err instanceof ReportParamsError) {
        if (put) deps.metrics?.reported("rejected");
        return json(400, { error: err.message });
      }
      if (err instanceof ServiceError && err.kind === "invalid") {
        if (put) deps.metrics?.reported("rejected");
        return json(400, { message: `400 Bad request - ${err.message}` });
      }
      throw err;
    }
  };
}
