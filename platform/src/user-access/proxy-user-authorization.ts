/**
 * GitLab's `POST /internal/kubernetes/authorize_proxy_user` decision
 * (`Clusters::Agents::AuthorizeProxyUserService`, EE's `access_as: user` included): may this user
 * reach the cluster of this agent through KAS's Kubernetes API proxy, and as whom?
 *
 * The user comes from a personal access token with the `k8s_proxy` scope (browser sessions are not
 * supported yet). The agent's `user_access` authorizations (recorded from its config by the
 * agent-config service) count only where the user has Developer or more; none usable means 403.
 * `access_as: agent` answers `{ agent: {} }`; `access_as: user` lists each usable project and group
 * with the user's GitLab role names there, from which KAS builds impersonation groups.
 */
import type { AgentConfigService } from "../agent-config/agent-config-service.js";
import type { UserAccessAuthorization } from "../agent-config/authorizations.js";
import type { MemberService } from "../services/members.js";
import type { NamespaceService } from "../services/namespaces.js";
import type { PersonalAccessToken, PersonalAccessTokenService } from "../services/personal-access-tokens.js";
import type { Agent, AgentService } from "../services/agents.js";
import type { Project, ProjectService } from "../services/projects.js";
import type { User } from "../services/users.js";
import { rolesForAccessLevel } from "../ci/roles.js";

/** The PAT scope GitLab requires for the Kubernetes API proxy (`Gitlab::Auth::K8S_PROXY_SCOPE`). */
export const K8S_PROXY_SCOPE = "k8s_proxy";

export const PROXY_USER_ACCESS_TYPES = ["session_cookie", "personal_access_token"] as const;
export type ProxyUserAccessType = (typeof PROXY_USER_ACCESS_TYPES)[number];

export interface ProxyUserRoles {
  id: number;
  roles: string[];
}

export type ProxyUserAccessAs = { agent: Record<string, never> } | { user: { projects: ProxyUserRoles[]; groups: ProxyUserRoles[] } };

export interface ProxyUserAuthorization {
  agent: Agent;
  configProject: Project;
  user: User;
  accessAs: ProxyUserAccessAs;
  /** The token that authenticated (its id and expiry go to KAS, so it can end what the token opened). */
  token: PersonalAccessToken;
}

/** Why a request was refused; `status` is the HTTP status GitLab answers with. */
export type ProxyUserRefusal =
  | { status: 401; reason: "unauthorized"; message: string }
  | { status: 403; reason: "insufficient_scope" | "forbidden"; message: string }
  | { status: 404; reason: "agent_not_found"; message: string };

export type ProxyUserAuthorizationResult = { ok: true; authorization: ProxyUserAuthorization } | ({ ok: false } & ProxyUserRefusal);

export interface AuthorizeProxyUserInput {
  agentId: number;
  accessType: ProxyUserAccessType;
  accessKey: string;
}

export interface ProxyUserAuthorizationService {
  authorizeProxyUser(input: AuthorizeProxyUserInput): Promise<ProxyUserAuthorizationResult>;
}

export interface ProxyUserAuthorizationDeps {
  personalAccessTokens: PersonalAccessTokenService;
  agents: AgentService;
  projects: ProjectService;
  namespaces: NamespaceService;
  members: MemberService;
  agentConfigs: AgentConfigService;
}

const refuse = (r: ProxyUserRefusal): ProxyUserAuthorizationResult => ({ ok: false, ...r });
const FORBIDDEN = () => refuse({ status: 403, reason: "forbidden", message: "403 Forbidden" });

export function createProxyUserAuthorizationService(deps: ProxyUserAuthorizationDeps): ProxyUserAuthorizationService {
  /** The user's real membership level at the authorization's target (admins are not special here, as GitLab's max_member_access). */
  async function levelAt(user: User, auth: UserAccessAuthorization): Promise<number> {
    if (!user.admin) return auth.accessLevel;
    if (auth.via === "project") {
      const project = await deps.projects.get(auth.targetId);
      return project ? deps.members.projectAccessLevel(user.id, project) : 0;
    }
    const group = await deps.namespaces.get(auth.targetId);
    return group ? deps.members.groupAccessLevel(user.id, group) : 0;
  }

  return {
    async authorizeProxyUser(input) {
      if (input.accessType !== "personal_access_token") {
        return refuse({ status: 401, reason: "unauthorized", message: "401 Unauthorized - session_cookie access is not supported" });
      }
      const found = await deps.personalAccessTokens.authenticate(input.accessKey);
      if (!found) return refuse({ status: 401, reason: "unauthorized", message: "401 Unauthorized" });
      if (!found.token.scopes.includes(K8S_PROXY_SCOPE)) {
        return refuse({ status: 403, reason: "insufficient_scope", message: "403 Forbidden - insufficient_scope" });
      }
      const { user, token } = found;
      const agent = await deps.agents.getById(input.agentId);
      if (!agent) return refuse({ status: 404, reason: "agent_not_found", message: "404 Not found" });

      const auths = await deps.agentConfigs.userAccessAgentsForUser({ id: user.id, admin: user.admin }, { agentId: agent.id });
      if (auths.length === 0) return FORBIDDEN();
      // Every entry of one agent carries the same user_access.access_as.
      const accessAs = auths[0]!.configuration.access_as;
      const keys = accessAs && typeof accessAs === "object" && !Array.isArray(accessAs) ? Object.keys(accessAs) : [];
      if (keys.length !== 1) return FORBIDDEN();
      const configProject = auths[0]!.configProject;

      if (keys[0] === "agent") {
        return { ok: true, authorization: { agent, configProject, user, accessAs: { agent: {} }, token } };
      }
      if (keys[0] !== "user") return FORBIDDEN();
      const projects: ProxyUserRoles[] = [];
      const groups: ProxyUserRoles[] = [];
      for (const auth of auths) {
        const entry = { id: auth.targetId, roles: rolesForAccessLevel(await levelAt(user, auth)) };
        (auth.via === "project" ? projects : groups).push(entry);
      }
      return { ok: true, authorization: { agent, configProject, user, accessAs: { user: { projects, groups } }, token } };
    },
  };
}
