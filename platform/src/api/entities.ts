/**
 * JSON shapes of GitLab's REST API entities (API::Entities::*), snake_case, times as ISO-8601.
 * Only the fields meaningful here are filled; the rest of GitLab's fields are left out rather
 * than faked.
 */
import type { AgentConfigState } from "../agent-config/agent-config-service.js";
import type { CiEnvironment, CiJob, CiJobAllowedAgents } from "../ci/ci-jobs.js";
import type { ProxyUserAuthorization } from "../user-access/proxy-user-authorization.js";
import type { GitopsStatusEntity } from "../gitops/gitops-status.js";
import type { AgentConnection } from "@kasbridge/sdk/platform-client";
import type { AgentToken } from "../services/agent-tokens.js";
import type { Agent } from "../services/agents.js";
import type { Membership } from "../services/members.js";
import type { Namespace } from "../services/namespaces.js";
import type { PersonalAccessToken } from "../services/personal-access-tokens.js";
import type { Project } from "../services/projects.js";
import { PROTECTED_BRANCH_ACCESS_LEVEL_NAMES, type ProtectedBranch } from "../services/protected-branches.js";
import type { User } from "../services/users.js";

const iso = (d: Date | null) => (d ? d.toISOString() : null);
const url = (base: string, path: string) => `${base.replace(/\/+$/, "")}/${path}`;

export function userBasicEntity(user: User, baseUrl: string) {
  return {
    id: user.id,
    username: user.username,
    name: user.name,
    state: user.state,
    locked: false,
    avatar_url: null,
    web_url: url(baseUrl, user.username),
  };
}

/** The user as an admin (or the user themself) sees it. */
export function userEntity(user: User, baseUrl: string) {
  return {
    ...userBasicEntity(user, baseUrl),
    created_at: iso(user.createdAt),
    email: user.email,
    is_admin: user.admin,
  };
}

export function memberEntity(user: User, membership: Membership, baseUrl: string) {
  return {
    ...userBasicEntity(user, baseUrl),
    access_level: membership.accessLevel,
    created_at: iso(membership.createdAt),
    expires_at: null,
  };
}

export function namespaceEntity(ns: Namespace, baseUrl: string) {
  return {
    id: ns.id,
    name: ns.name,
    path: ns.path,
    kind: ns.kind,
    full_path: ns.fullPath,
    parent_id: ns.parentId,
    avatar_url: null,
    web_url: ns.kind === "group" ? url(baseUrl, `groups/${ns.fullPath}`) : url(baseUrl, ns.fullPath),
  };
}

export function groupEntity(ns: Namespace, baseUrl: string) {
  return {
    id: ns.id,
    web_url: url(baseUrl, `groups/${ns.fullPath}`),
    name: ns.name,
    path: ns.path,
    description: ns.description,
    visibility: ns.visibility,
    full_name: ns.fullName,
    full_path: ns.fullPath,
    created_at: iso(ns.createdAt),
    parent_id: ns.parentId,
    avatar_url: null,
  };
}

/** GitLab's ProjectIdentity, used as an agent's `config_project`. */
export function projectIdentityEntity(project: Project) {
  return {
    id: project.id,
    description: project.description,
    name: project.name,
    name_with_namespace: project.nameWithNamespace,
    path: project.path,
    path_with_namespace: project.pathWithNamespace,
    created_at: iso(project.createdAt),
  };
}

export function projectEntity(project: Project, baseUrl: string, owner?: User) {
  const webUrl = url(baseUrl, project.pathWithNamespace);
  return {
    ...projectIdentityEntity(project),
    default_branch: project.defaultBranch,
    tag_list: [],
    topics: [],
    http_url_to_repo: `${webUrl}.git`,
    web_url: webUrl,
    readme_url: null,
    avatar_url: null,
    forks_count: 0,
    star_count: 0,
    last_activity_at: iso(project.createdAt),
    namespace: namespaceEntity(project.namespace, baseUrl),
    visibility: project.visibility,
    creator_id: project.creatorId,
    ...(owner ? { owner: userBasicEntity(owner, baseUrl) } : {}),
    _links: {
      self: url(baseUrl, `api/v4/projects/${project.id}`),
    },
  };
}

export function agentEntity(agent: Agent, project: Project, config?: AgentConfigState) {
  return {
    id: agent.id,
    name: agent.name,
    config_project: projectIdentityEntity(project),
    created_at: iso(agent.createdAt),
    created_by_user_id: agent.createdByUserId,
    ...(config ? agentConfigFields(config) : {}),
  };
}

/**
 * kasbridge extension (GitLab shows none of this in its REST API): the agent's accepted config
 * commit (null until one is accepted), when it was stored, and the last rejected config's error
 * (null when the last processed commit was accepted).
 */
export function agentConfigFields(config: AgentConfigState) {
  return {
    config_commit_id: config.commitId === "" ? null : config.commitId,
    config_updated_at: iso(config.updatedAt),
    config_error: config.error
      ? { message: config.error.message, commit_id: config.error.commitId, at: iso(config.error.at) }
      : null,
  };
}

/**
 * GitLab's AgentToken entity. GitLab leaves `last_used_at` out of list responses; including it
 * everywhere is a compatible superset.
 */
export function agentTokenEntity(token: AgentToken) {
  return {
    id: token.id,
    name: token.name,
    description: token.description,
    agent_id: token.agentId,
    status: token.status,
    created_at: iso(token.createdAt),
    created_by_user_id: token.createdByUserId,
    last_used_at: iso(token.lastUsedAt),
  };
}

export function personalAccessTokenEntity(token: PersonalAccessToken) {
  return {
    id: token.id,
    name: token.name,
    description: token.description,
    revoked: token.revoked,
    created_at: iso(token.createdAt),
    scopes: token.scopes,
    user_id: token.userId,
    last_used_at: iso(token.lastUsedAt),
    active: token.active,
    expires_at: token.expiresAt,
  };
}

/** kasbridge extension: one connected agent process. */
export function agentConnectionEntity(c: AgentConnection) {
  return {
    connection_id: c.connectionId,
    agent_version: c.agentVersion,
    agent_commit: c.agentCommit,
    pod_name: c.podName,
    pod_namespace: c.podNamespace,
    connected_at: iso(c.connectedAt),
    kas_instance: c.kasInstance,
  };
}

/**
 * kasbridge extension: an agent's health. GitLab's cluster_agents fields (`id`, `name`,
 * `config_project`, `created_at`, `created_by_user_id`), the config fields, and ours:
 * `connected`, `last_seen_at` (now while connected, else the last use of one of its tokens),
 * `versions` (of the connected agentk processes), `pods` (GitLab's agent connections: pod,
 * version, commit, since when), `last_error`: the newest of the last rejected configuration
 * (`source: "configuration"`, with `commit_id`) and the errors the agent last reported for its
 * GitOps manifest projects (`source: "gitops"`, with `project`); null when there is none.
 */
export function agentHealthEntity(
  agent: Agent,
  project: Project,
  connections: AgentConnection[],
  config: AgentConfigState | undefined,
  tokens: AgentToken[],
  gitops: GitopsStatusEntity[] = [],
) {
  const lastUsed = tokens.map((t) => t.lastUsedAt?.getTime() ?? 0).reduce((a, b) => Math.max(a, b), 0);
  const configFields = config ? agentConfigFields(config) : { config_commit_id: null, config_updated_at: null, config_error: null };
  const errors: AgentHealthError[] = gitops
    .filter((g) => g.last_error !== null)
    .map((g) => ({ source: "gitops", message: g.last_error!, at: g.updated_at, project: g.project }));
  if (configFields.config_error) errors.push({ source: "configuration", ...configFields.config_error });
  const newest = errors.reduce<AgentHealthError | null>((a, b) => (a === null || Date.parse(b.at ?? "") > Date.parse(a.at ?? "") ? b : a), null);
  return {
    ...agentEntity(agent, project),
    connected: connections.length > 0,
    last_seen_at: connections.length > 0 ? new Date().toISOString() : lastUsed > 0 ? new Date(lastUsed).toISOString() : null,
    versions: [...new Set(connections.map((c) => c.agentVersion))].sort(),
    pods: connections.map(agentConnectionEntity),
    ...configFields,
    last_error: newest,
  };
}

/** One entry of an agent's health `last_error`. */
interface AgentHealthError {
  source: "configuration" | "gitops";
  message: string;
  at: string | null;
  commit_id?: string;
  project?: string;
}

/** kasbridge extension (we stand in for a CI system): a job's environment. */
export function ciEnvironmentEntity(env: CiEnvironment) {
  return { name: env.name, slug: env.slug, tier: env.tier };
}

/**
 * kasbridge extension: a CI job (without its token). `expires_at` is when its job token stops
 * working even while the job runs; `environment` only when the job has one.
 */
export function ciJobEntity(job: CiJob) {
  return {
    id: job.id,
    status: job.status,
    ref: job.ref,
    project_id: job.projectId,
    user_id: job.userId,
    pipeline: { id: job.pipelineId },
    created_at: iso(job.createdAt),
    finished_at: iso(job.finishedAt),
    expires_at: iso(job.tokenExpiresAt),
    ...(job.environment ? { environment: ciEnvironmentEntity(job.environment) } : {}),
  };
}

/**
 * GitLab's `GET /job/allowed_agents` answer. Each agent is GitLab's CiAccess authorization entity
 * (`config_project` as ProjectIdentity, `configuration` = the ci_access entry without `id`, `{}`
 * for the implicit authorization); `environment` only when the job has one. kasbridge extension:
 * `job.token_expires_at`, when the job token stops working (KAS ends the streams it opened then).
 */
export function allowedAgentsForJobEntity(a: CiJobAllowedAgents) {
  return {
    allowed_agents: a.allowedAgents.map((x) => ({
      id: x.agent.id,
      config_project: projectIdentityEntity(x.configProject),
      configuration: x.configuration,
    })),
    job: { id: a.job.id, token_expires_at: iso(a.job.tokenExpiresAt) },
    pipeline: { id: a.job.pipelineId },
    project: { id: a.project.id, groups: a.projectGroupIds.map((id) => ({ id })) },
    user: { id: a.user.id, username: a.user.username, roles_in_project: a.rolesInProject },
    ...(a.environment ? { environment: { tier: a.environment.tier, slug: a.environment.slug } } : {}),
  };
}

/**
 * GitLab's `authorize_proxy_user` answer. kasbridge extension: `personal_access_token` (its id and
 * `expires_at` date), so KAS can end what the token opened when it is revoked or expires.
 */
export function proxyUserAuthorizationEntity(a: ProxyUserAuthorization) {
  return {
    agent: { id: a.agent.id, config_project: { id: a.configProject.id } },
    user: { id: a.user.id, username: a.user.username },
    access_as: a.accessAs,
    personal_access_token: { id: a.token.id, expires_at: a.token.expiresAt },
  };
}

/**
 * GitLab's `API::Entities::ProtectedBranch` (free tier: one push and one merge access level, by
 * role). An access level entry has no row of its own here, so its id is the rule's id.
 */
export function protectedBranchEntity(branch: ProtectedBranch) {
  const level = (accessLevel: number) => ({
    id: branch.id,
    access_level: accessLevel,
    access_level_description: PROTECTED_BRANCH_ACCESS_LEVEL_NAMES[accessLevel] ?? String(accessLevel),
  });
  return {
    id: branch.id,
    name: branch.name,
    push_access_levels: [{ ...level(branch.pushAccessLevel), deploy_key_id: null }],
    merge_access_levels: [level(branch.mergeAccessLevel)],
    allow_force_push: branch.allowForcePush,
    code_owner_approval_required: false,
  };
}
