import type { KasAuditEvent } from "./audit-events.js";
import type { ConfigurationFile } from "../gen/gitlab/agent/agentcfg/agentcfg_pb.js";
import type { ManifestProjectStatus } from "../gen/kasbridge/gitops/v1/sync_status_pb.js";

/**
 * How KAS reaches the platform ("Rails bridge"). Two implementations: in-process
 * (`createInProcessPlatformClient`, backed by our store) and HTTP (`createHttpPlatformClient`,
 * GitLab's internal API with a `Gitlab-Kas-Api-Request` JWT), so KAS can run against our platform
 * or any GitLab-compatible one.
 */

/** Identity of an agent, as `GET /api/v4/internal/kubernetes/agent_info` answers it. */
export interface AgentInfo {
  agentId: number;
  agentName: string;
  projectId: number;
  /** Full path of the agent's configuration project, e.g. "group/sub/project". */
  projectPath: string;
  defaultBranch: string;
  /**
   * Id of the agent token that authenticated (kasbridge extension, absent from GitLab): lets KAS
   * close exactly the tunnels of a revoked token.
   */
  tokenId?: number;
}

/**
 * A credential that stopped working, delivered so KAS can end what it authorized: the tunnels of
 * an agent token, the Kubernetes API proxy streams of a CI job, a personal access token or a user.
 */
export type TokenRevocation = AgentTokenRevocation | CiJobRevocation | PersonalAccessTokenRevocation | UserRevocation;

/** An agent token was revoked (or its agent deleted). */
export interface AgentTokenRevocation {
  kind: "agent_token";
  agentId: number;
  tokenId: number;
}

/** A CI job finished (or was canceled): its job token stopped working. */
export interface CiJobRevocation {
  kind: "ci_job";
  jobId: number;
}

/** A personal access token was revoked. */
export interface PersonalAccessTokenRevocation {
  kind: "personal_access_token";
  userId: number;
  tokenId: number;
}

/** A user was blocked: none of their tokens (personal access tokens, their CI jobs' tokens) work. */
export interface UserRevocation {
  kind: "user";
  userId: number;
}

/** An agent's accepted configuration (`.gitlab/agents/<name>/config.yaml` on the default branch). */
export interface AgentConfigurationSnapshot {
  agentId: number;
  /**
   * Commit of the accepted config; "" while the agent's config project has no commit with a
   * valid config for it (the agent then runs with the empty configuration, as in GitLab).
   */
  commitId: string;
  /** The parsed and validated config file. */
  config: ConfigurationFile;
}

/** GitLab's `project_info` answer, camelCased: the project an agent may read, and its repository. */
export interface ProjectInfo {
  /** Numeric project id. */
  projectId: number;
  /** The repository's default branch ("HEAD" resolves to it). */
  defaultBranch: string;
  /** `gitaly_repository.gl_project_path`: the project's full path. */
  fullPath: string;
}

/** A repository file larger than the limit it was read with (GitOps' max_manifest_file_size). */
export class RepositoryFileTooLargeError extends Error {
  override readonly name = "RepositoryFileTooLargeError";
  constructor(
    readonly path: string,
    readonly maxBytes: number,
  ) {
    super(`file ${path} is larger than ${maxBytes} bytes`);
  }
}

/** Error kinds a PlatformClient reports; KAS maps them to gRPC codes. */
export type PlatformErrorKind = "unauthenticated" | "forbidden" | "not_found" | "unavailable";

export class PlatformError extends Error {
  override readonly name = "PlatformError";
  constructor(
    readonly kind: PlatformErrorKind,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

export interface PlatformClient {
  /**
   * Resolves an agent token to the agent's identity. Throws PlatformError("unauthenticated") for an
   * unknown or revoked token, PlatformError("unavailable") when the platform cannot be reached.
   */
  getAgentInfo(agentToken: string, signal?: AbortSignal): Promise<AgentInfo>;
  /**
   * Calls `onRevoked` for every credential revoked from now on (agent tokens, finished CI jobs,
   * personal access tokens, blocked users), until `signal` aborts. Delivery target: within a
   * second of the revocation. Expiry is not signalled: the answers that authorize a credential
   * say when it expires.
   */
  watchTokenRevocations(onRevoked: (revocation: TokenRevocation) => void, signal: AbortSignal): void;
  /**
   * The agent's current accepted configuration. Throws PlatformError("not_found") for an unknown
   * agent. Optional: without it, agents receive the empty configuration.
   */
  getAgentConfiguration?(agentId: number, signal?: AbortSignal): Promise<AgentConfigurationSnapshot>;
  /**
   * Calls `onChange(agentId)` whenever an agent's accepted configuration changes (a push with a new
   * valid config), until `signal` aborts. Delivery target: within a second of the push.
   */
  watchAgentConfigurations?(onChange: (agentId: number) => void, signal: AbortSignal): void;
  /**
   * Kubernetes API proxy (port 8154). The agents a CI job may use (GitLab's `GET /job/allowed_agents`, `Job-Token` header). Throws
   * PlatformError("unauthenticated") for an unknown, expired or finished job token,
   * PlatformError("unavailable") when the platform cannot be reached.
   */
  allowedAgentsForJob?(jobToken: string, signal?: AbortSignal): Promise<JobAllowedAgents>;
  /**
   * May this user reach the agent's cluster, and as whom (GitLab's `authorize_proxy_user`)? Throws
   * PlatformError "unauthenticated" (401), "forbidden" (403, scope or no user_access), "not_found"
   * (404, no such agent) or "unavailable".
   */
  authorizeProxyUser?(request: AuthorizeProxyUserRequest, signal?: AbortSignal): Promise<ProxyUserAuthorizationAnswer>;
  /**
   * May the agent of `agentToken` read the project at `fullPath` (GitLab's `verify_project_access`)?
   * False for a project that does not exist or that it may not read. Throws PlatformError
   * "unauthenticated" for a bad token, "unavailable". Used by Flux before notifying an agent.
   */
  verifyProjectAccess?(agentToken: string, fullPath: string, signal?: AbortSignal): Promise<boolean>;
  /**
   * The project at `fullPath` as the agent of `agentToken` may read it (GitLab's `project_info`).
   * Throws PlatformError "not_found" (no such project, or not readable), "unauthenticated",
   * "forbidden", "unavailable". Used by GitOps before reading manifests.
   */
  getProjectInfo?(agentToken: string, fullPath: string, signal?: AbortSignal): Promise<ProjectInfo>;
  /**
   * The repository reads GitOps needs (GitLab's KAS reads Gitaly; kasbridge asks the platform):
   * the commit a revision ("HEAD", "refs/heads/x", "refs/tags/x", an object id) names, undefined
   * when it names none (or the repository is empty).
   */
  resolveRepositoryRevision?(projectId: number, revision: string, signal?: AbortSignal): Promise<string | undefined>;
  /** Every file path of `commit`'s tree, sorted. Throws PlatformError("not_found") for an unknown commit. */
  listRepositoryFiles?(projectId: number, commit: string, signal?: AbortSignal): Promise<string[]>;
  /** A file's content at `commit`; undefined when absent; throws RepositoryFileTooLargeError over `maxBytes`. */
  readRepositoryFile?(projectId: number, commit: string, path: string, maxBytes: number, signal?: AbortSignal): Promise<Uint8Array | undefined>;
  /** Stores what the agent of `agentToken` reports of one manifest project's sync (kasbridge's GitOps status). */
  reportGitopsStatus?(agentToken: string, status: ManifestProjectStatus, signal?: AbortSignal): Promise<void>;
  /**
   * gitlab_access: an agent module's HTTP request to the platform (GitLab:
   * `/api/v4/internal/kubernetes/modules/<module><url_path>`, with the agent's token). Resolves
   * with whatever the platform answered, errors included; throws PlatformError("unavailable")
   * when the platform cannot be reached. Optional: without it, agents' requests fail UNIMPLEMENTED.
   */
  makeModuleRequest?(request: ModuleRequest, signal?: AbortSignal): Promise<ModuleResponse>;
  /**
   * usage_metrics: counters since the last successful send (GitLab's `POST
   * /api/v4/internal/kubernetes/usage_metrics`, answered 204). Throws PlatformError when the
   * platform refused them or cannot be reached; the caller keeps them for the next send.
   */
  sendUsageMetrics?(payload: UsageMetricsPayload, signal?: AbortSignal): Promise<void>;
  /**
   * kasbridge extension: events for the platform's audit trail (Kubernetes API requests through
   * the proxy, agent connections), in batches. Throws PlatformError when the platform refused
   * them or cannot be reached; KAS keeps them for the next send.
   */
  recordAuditEvents?(events: KasAuditEvent[], signal?: AbortSignal): Promise<void>;
  /**
   * kasbridge extension (workspaces_proxy): may this credential reach the workspace port of
   * `host` (`<port>-<workspace>.<dns_zone>`), and where does it run? Throws PlatformError
   * "unauthenticated" (bad, expired or revoked credential), "forbidden" (token scope),
   * "not_found" (no such workspace, not the caller's, or the port is not a public endpoint),
   * "unavailable". A workspace that is not running is answered, with its state.
   */
  authorizeWorkspaceAccess?(request: WorkspaceAccessRequest, signal?: AbortSignal): Promise<WorkspaceAccessAnswer>;
}

/** How a caller of the workspace proxy authenticates. */
export type WorkspaceAccessType = "personal_access_token" | "workspace_callback" | "workspace_session";

/** What KAS passes to `authorizeWorkspaceAccess`. */
export interface WorkspaceAccessRequest {
  /** The request's host, e.g. "3000-workspace-1-2-abcdef.workspaces.example.dev". */
  host: string;
  accessType: WorkspaceAccessType;
  /** The personal access token, the callback token or the session token. */
  accessKey: string;
}

/** The platform's answer to {@link WorkspaceAccessRequest}. */
export interface WorkspaceAccessAnswer {
  workspace: { id: number; name: string; namespace: string; actualState: string; desiredState: string };
  agentId: number;
  user: { id: number; username: string };
  /** Where the agent forwards: the workspace's Service and port. */
  target: { namespace: string; service: string; port: number };
  /** The personal access token behind the credential (a browser session's: the one it logged in with). */
  personalAccessToken: { id: number; expiresAt?: number };
  /** For a callback token only: the session token the proxy keeps in its cookie, and when it expires (ms since the epoch). */
  session?: { token: string; expiresAt: number };
}

/** Parses the platform's workspace access JSON; throws PlatformError("unavailable") when malformed. */
export function parseWorkspaceAccess(body: unknown): WorkspaceAccessAnswer {
  const bad = (what: string) => new PlatformError("unavailable", `workspace access: malformed response from platform (${what})`);
  const b = body as Record<string, any> | undefined; // eslint-disable-line @typescript-eslint/no-explicit-any
  const int = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v);
  const str = (v: unknown): v is string => typeof v === "string";
  const w = b?.workspace;
  if (!w || !int(w.id) || !str(w.name) || !str(w.namespace) || !str(w.actual_state) || !str(w.desired_state)) throw bad("workspace");
  if (!int(b!.agent?.id)) throw bad("agent");
  if (!int(b!.user?.id) || !str(b!.user.username)) throw bad("user");
  const t = b!.target;
  if (!t || !str(t.namespace) || !str(t.service) || !int(t.port) || t.port < 1 || t.port > 65535) throw bad("target");
  const pat = b!.personal_access_token;
  if (!int(pat?.id)) throw bad("personal_access_token");
  const expiresAt = instant(pat.expires_at);
  const session = b!.session;
  const sessionExpiresAt = instant(session?.expires_at);
  if (session !== undefined && session !== null && (!str(session.token) || sessionExpiresAt === undefined)) throw bad("session");
  return {
    workspace: { id: w.id, name: w.name, namespace: w.namespace, actualState: w.actual_state, desiredState: w.desired_state },
    agentId: b!.agent.id,
    user: { id: b!.user.id, username: b!.user.username },
    target: { namespace: t.namespace, service: t.service, port: t.port },
    personalAccessToken: { id: pat.id, ...(expiresAt !== undefined ? { expiresAt } : {}) },
    ...(session ? { session: { token: session.token as string, expiresAt: sessionExpiresAt! } } : {}),
  };
}

/** GitLab's usage_metrics body: `counters` (name -> count), `unique_counters` (name -> distinct ids); each omitted when empty. */
export interface UsageMetricsPayload {
  counters?: Record<string, number>;
  unique_counters?: Record<string, number[]>;
}

/** Header or query entries: each name with its values, as they travel in GitLab's protocol. */
export type MultiMap = Record<string, string[]>;

/** An agent module's request to the platform, carried through KAS (gitlab_access). */
export interface ModuleRequest {
  /** The agent's token: the platform authenticates the agent with it. */
  agentToken: string;
  /** The module making the request, e.g. "starboard_vulnerability". */
  module: string;
  method: string;
  /** Module-relative path, starting with "/" (e.g. "/policies_configuration"). */
  urlPath: string;
  query: MultiMap;
  /** The agent's request headers, without hop-by-hop and credential headers. */
  headers: MultiMap;
  /** The request body, as it arrives from the agent (empty for none). */
  body: AsyncIterable<Uint8Array>;
}

/** The platform's answer to a {@link ModuleRequest}. */
export interface ModuleResponse {
  status: number;
  /** Reason phrase, e.g. "OK" (may be empty). */
  statusText: string;
  headers: MultiMap;
  body: AsyncIterable<Uint8Array>;
}

/**
 * GitLab's `GET /api/v4/job/allowed_agents` answer for one CI job token, camelCased. An agent's
 * `configuration` is its ci_access entry as proto JSON with the config file's snake_case names
 * (`{ default_namespace?, access_as?: { agent: {} } | { impersonate: {…} } | { ci_job: {} }, environments? }`).
 */
export interface JobAllowedAgents {
  allowedAgents: Array<{ id: number; configProject: { id: number }; configuration: Record<string, unknown> }>;
  /**
   * `tokenExpiresAt` (ms since the epoch; kasbridge extension `job.token_expires_at`, absent from
   * GitLab): when the job token stops working even while the job runs.
   */
  job: { id: number; tokenExpiresAt?: number };
  pipeline: { id: number };
  project: { id: number; groups: Array<{ id: number }> };
  user: { id: number; username: string; rolesInProject: string[] };
  /** Only when the job deploys to an environment. */
  environment?: { slug: string; tier: string };
}

/** How a proxy user reaches the cluster: as the agent, or as themselves with their roles. */
export type ProxyUserAccessAsAnswer =
  | { agent: Record<string, never> }
  | { user: { projects: Array<{ id: number; roles: string[] }>; groups: Array<{ id: number; roles: string[] }> } };

/** GitLab's `POST /api/v4/internal/kubernetes/authorize_proxy_user` answer, camelCased. */
export interface ProxyUserAuthorizationAnswer {
  agent: { id: number; configProject: { id: number } };
  user: { id: number; username: string };
  accessAs: ProxyUserAccessAsAnswer;
  /**
   * The personal access token that authenticated (kasbridge extension `personal_access_token`,
   * absent from GitLab): its id, so KAS can end what it authorized when it is revoked, and when it
   * expires (ms since the epoch; absent: never).
   */
  personalAccessToken?: { id: number; expiresAt?: number };
}

/** What KAS passes to `authorizeProxyUser`. */
export interface AuthorizeProxyUserRequest {
  agentId: number;
  accessType: "personal_access_token" | "session_cookie";
  accessKey: string;
  /** Only with a session cookie. */
  csrfToken?: string;
}

/** Parses GitLab's `allowed_agents` JSON; throws PlatformError("unavailable") when malformed. */
export function parseJobAllowedAgents(body: unknown): JobAllowedAgents {
  const bad = (what: string) => new PlatformError("unavailable", `allowed_agents: malformed response from platform (${what})`);
  const b = body as Record<string, any> | undefined; // eslint-disable-line @typescript-eslint/no-explicit-any
  const int = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v);
  if (!b || typeof b !== "object" || !Array.isArray(b.allowed_agents)) throw bad("allowed_agents");
  if (!int(b.job?.id) || !int(b.pipeline?.id) || !int(b.project?.id) || !int(b.user?.id) || typeof b.user?.username !== "string") {
    throw bad("job, pipeline, project or user");
  }
  const allowedAgents: JobAllowedAgents["allowedAgents"] = [];
  for (const a of b.allowed_agents as Record<string, any>[]) { // eslint-disable-line @typescript-eslint/no-explicit-any
    if (!int(a?.id) || !int(a.config_project?.id)) throw bad("allowed agent");
    const configuration = a.configuration && typeof a.configuration === "object" && !Array.isArray(a.configuration) ? a.configuration : {};
    allowedAgents.push({ id: a.id, configProject: { id: a.config_project.id }, configuration });
  }
  const groups = Array.isArray(b.project.groups) ? (b.project.groups as { id?: unknown }[]) : [];
  const roles = Array.isArray(b.user.roles_in_project) ? (b.user.roles_in_project as unknown[]) : [];
  const env = b.environment as { slug?: unknown; tier?: unknown } | undefined | null;
  const tokenExpiresAt = instant(b.job.token_expires_at);
  return {
    allowedAgents,
    job: { id: b.job.id, ...(tokenExpiresAt !== undefined ? { tokenExpiresAt } : {}) },
    pipeline: { id: b.pipeline.id },
    project: { id: b.project.id, groups: groups.filter((g) => int(g?.id)).map((g) => ({ id: g.id as number })) },
    user: { id: b.user.id, username: b.user.username, rolesInProject: roles.filter((r): r is string => typeof r === "string") },
    ...(env && typeof env.slug === "string" && typeof env.tier === "string" ? { environment: { slug: env.slug, tier: env.tier } } : {}),
  };
}

/** Parses GitLab's `authorize_proxy_user` JSON; throws PlatformError("unavailable") when malformed. */
export function parseProxyUserAuthorization(body: unknown): ProxyUserAuthorizationAnswer {
  const bad = (what: string) => new PlatformError("unavailable", `authorize_proxy_user: malformed response from platform (${what})`);
  const b = body as Record<string, any> | undefined; // eslint-disable-line @typescript-eslint/no-explicit-any
  const int = (v: unknown): v is number => typeof v === "number" && Number.isSafeInteger(v);
  if (!b || !int(b.agent?.id) || !int(b.agent?.config_project?.id)) throw bad("agent");
  if (!int(b.user?.id) || typeof b.user?.username !== "string") throw bad("user");
  const as = b.access_as as Record<string, any> | undefined; // eslint-disable-line @typescript-eslint/no-explicit-any
  let accessAs: ProxyUserAccessAsAnswer;
  const rolesList = (v: unknown) =>
    (Array.isArray(v) ? (v as { id?: unknown; roles?: unknown }[]) : [])
      .filter((x) => int(x?.id))
      .map((x) => ({ id: x.id as number, roles: Array.isArray(x.roles) ? x.roles.filter((r): r is string => typeof r === "string") : [] }));
  if (as && typeof as.user === "object" && as.user !== null) {
    accessAs = { user: { projects: rolesList(as.user.projects), groups: rolesList(as.user.groups) } };
  } else if (as && typeof as.agent === "object" && as.agent !== null) {
    accessAs = { agent: {} };
  } else {
    throw bad("access_as");
  }
  const pat = b.personal_access_token as { id?: unknown; expires_at?: unknown } | undefined | null;
  const expiresAt = instant(pat?.expires_at);
  return {
    agent: { id: b.agent.id, configProject: { id: b.agent.config_project.id } },
    user: { id: b.user.id, username: b.user.username },
    accessAs,
    ...(pat && int(pat.id) ? { personalAccessToken: { id: pat.id, ...(expiresAt !== undefined ? { expiresAt } : {}) } } : {}),
  };
}

/**
 * An expiry instant from a platform answer: an ISO 8601 timestamp, or a GitLab token date
 * ("YYYY-MM-DD", which ends at 00:00 UTC that day). Undefined when absent or unreadable.
 */
function instant(value: unknown): number | undefined {
  if (typeof value !== "string") return undefined;
  const ms = Date.parse(/^\d{4}-\d{2}-\d{2}$/.test(value) ? `${value}T00:00:00Z` : value);
  return Number.isFinite(ms) ? ms : undefined;
}
