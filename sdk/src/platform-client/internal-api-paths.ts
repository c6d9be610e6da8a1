// Paths of the platform API that KAS calls (GitLab's internal API and our extensions to it), shared
// by the HTTP PlatformClient and the platform that serves them.

/** Paths of the agent_info endpoint: the long-standing one and the newer agentk-specific one. */
export const AGENT_INFO_PATHS = ["/api/v4/internal/kubernetes/agent_info", "/api/v4/internal/agents/agentk/agent_info"];
/**
 * kasbridge extension: the revocation feed `createHttpPlatformClient` polls. Entries by `kind`:
 * `agent_token` (`agent_id`, `token_id`), `ci_job` (`job_id`), `personal_access_token`
 * (`user_id`, `token_id`), `user` (`user_id`, blocked).
 */
export const TOKEN_REVOCATIONS_PATH = "/api/v4/internal/kubernetes/token_revocations";
/**
 * kasbridge extension: an agent's accepted configuration, `?agent_id=`. (GitLab has a POST at this
 * path, through which its KAS reports configs it read from Gitaly; our platform reads them itself.)
 */
export const AGENT_CONFIGURATION_PATH = "/api/v4/internal/kubernetes/agent_configuration";
/** kasbridge extension: the feed of accepted agent configuration changes, polled like the revocation feed. */
export const AGENT_CONFIGURATION_CHANGES_PATH = "/api/v4/internal/kubernetes/agent_configuration_changes";
/** GitLab's public API path for a job's allowed agents (`Job-Token` authentication). */
export const JOB_ALLOWED_AGENTS_PATH = "/api/v4/job/allowed_agents";
/** The header a CI job sends its token in. */
export const JOB_TOKEN_HEADER = "Job-Token";
/** GitLab's internal API path KAS calls to authorize a user of the Kubernetes API proxy. */
export const AUTHORIZE_PROXY_USER_PATH = "/api/v4/internal/kubernetes/authorize_proxy_user";
/**
 * Prefix of the paths agent modules reach through KAS (`gitlab_access`): KAS sends an agent's
 * `MakeRequest` to `<prefix><url-escaped module name><url_path>`.
 */
export const MODULE_REQUEST_PATH_PREFIX = "/api/v4/internal/kubernetes/modules/";
/** GitLab's `GET …/verify_project_access?id=<full path>` (agent token): 204 the agent may read the project, 404 not. */
export const VERIFY_PROJECT_ACCESS_PATH = "/api/v4/internal/kubernetes/verify_project_access";
/** GitLab's `GET …/project_info?id=<full path>` (agent token): the project the agent may read, and its repository. */
export const PROJECT_INFO_PATH = "/api/v4/internal/kubernetes/project_info";
/**
 * kasbridge extensions standing in for Gitaly (GitLab's KAS reads repositories there), KAS JWT
 * only: `…/commit?project_id&revision` -> `{commit_id}`, `…/tree?project_id&commit` -> `{paths}`,
 * `…/blob?project_id&commit&path&max_bytes` -> the raw file (413 when larger).
 */
export const REPOSITORY_COMMIT_PATH = "/api/v4/internal/kubernetes/kasbridge/repository/commit";
export const REPOSITORY_TREE_PATH = "/api/v4/internal/kubernetes/kasbridge/repository/tree";
export const REPOSITORY_BLOB_PATH = "/api/v4/internal/kubernetes/kasbridge/repository/blob";
/** kasbridge extension: `POST` an agent's GitOps sync status (`{status: ManifestProjectStatus JSON}`, agent token). */
export const GITOPS_STATUS_PATH = "/api/v4/internal/kubernetes/kasbridge/gitops_status";
/** GitLab's internal API path KAS sends usage counters to (JWT only, answered 204). */
export const USAGE_METRICS_PATH = "/api/v4/internal/kubernetes/usage_metrics";
/** kasbridge extension: `POST {events: [...]}` (KAS JWT), KAS's audit events for the platform's audit trail; 204. */
export const AUDIT_EVENTS_PATH = "/api/v4/internal/kubernetes/kasbridge/audit_events";
/**
 * kasbridge extension: `POST {host, access_type, access_key}` (KAS JWT), may this credential reach
 * a workspace port through KAS's workspace proxy, and where is it (parseWorkspaceAccess)?
 */
export const WORKSPACE_ACCESS_PATH = "/api/v4/internal/kubernetes/kasbridge/workspace_access";
/**
 * kasbridge: the platform page a browser without a workspace session is sent to,
 * `GET ?return_to=<the workspace URL>`: the logged-in owner is sent back to the workspace host's
 * callback with a one-time token.
 */
export const WORKSPACE_LOGIN_PATH = "/-/kasbridge/workspaces/login";
/** kasbridge: the path on a workspace host where KAS takes the platform's one-time token (`?token=&return_to=`). */
export const WORKSPACE_CALLBACK_PATH = "/.kasbridge/workspace-callback";
