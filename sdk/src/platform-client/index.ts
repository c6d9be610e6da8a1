// @kasbridge/sdk/platform-client: what KAS needs of a platform, and the HTTP client for
// GitLab's internal API (a GitLab-compatible platform, ours included).

export { PlatformError, RepositoryFileTooLargeError, parseJobAllowedAgents, parseProxyUserAuthorization, parseWorkspaceAccess } from "./platform-client.js";
export type {
  AgentConfigurationSnapshot,
  AgentInfo,
  AgentTokenRevocation,
  AuthorizeProxyUserRequest,
  CiJobRevocation,
  JobAllowedAgents,
  ModuleRequest,
  ModuleResponse,
  MultiMap,
  PersonalAccessTokenRevocation,
  PlatformClient,
  PlatformErrorKind,
  ProjectInfo,
  ProxyUserAccessAsAnswer,
  ProxyUserAuthorizationAnswer,
  TokenRevocation,
  UsageMetricsPayload,
  UserRevocation,
  WorkspaceAccessAnswer,
  WorkspaceAccessRequest,
  WorkspaceAccessType,
} from "./platform-client.js";
export type { AgentConnection, AgentConnectionsSource } from "./connections.js";
export { createHttpPlatformClient } from "./http-platform-client.js";
export type { HttpPlatformClientOptions } from "./http-platform-client.js";
export {
  AGENT_CONFIGURATION_CHANGES_PATH,
  AGENT_CONFIGURATION_PATH,
  AGENT_INFO_PATHS,
  AUTHORIZE_PROXY_USER_PATH,
  JOB_ALLOWED_AGENTS_PATH,
  JOB_TOKEN_HEADER,
  MODULE_REQUEST_PATH_PREFIX,
  TOKEN_REVOCATIONS_PATH,
  VERIFY_PROJECT_ACCESS_PATH,
  PROJECT_INFO_PATH,
  REPOSITORY_COMMIT_PATH,
  REPOSITORY_TREE_PATH,
  REPOSITORY_BLOB_PATH,
  GITOPS_STATUS_PATH,
  USAGE_METRICS_PATH,
  AUDIT_EVENTS_PATH,
  WORKSPACE_ACCESS_PATH,
  WORKSPACE_CALLBACK_PATH,
  WORKSPACE_LOGIN_PATH,
} from "./internal-api-paths.js";
export type { AgentConnectionEvent, AuditActor, KasAuditEvent, KubernetesApiRequestEvent } from "./audit-events.js";
