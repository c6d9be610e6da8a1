// @kasbridge/platform: the GitLab-compatible platform ("Rails bridge"): store, services, REST and
// internal APIs, git hosting, CI jobs and user access. What KAS needs of it (PlatformClient, the
// HTTP client, the agent configuration parser) is in @kasbridge/sdk.

export { openStore, SQLITE_FILE_NAME } from "./store/store.js";
export type { OpenStoreOptions, Store, StoreDialect } from "./store/store.js";

export { createPlatformServices } from "./services/platform-services.js";
export type { PlatformServices, PlatformServicesOptions } from "./services/platform-services.js";
export { AccessLevel } from "./services/access-levels.js";
export type { AccessLevelValue } from "./services/access-levels.js";
export { ServiceError } from "./services/errors.js";
export type { ServiceErrorKind } from "./services/errors.js";
export type { CreateUserInput, User, UserService } from "./services/users.js";
export type { CreateGroupInput, Namespace, NamespaceService } from "./services/namespaces.js";
export type { CreateProjectInput, Project, ProjectService } from "./services/projects.js";
export type { MemberService, Membership } from "./services/members.js";
export {
  DEFAULT_BRANCH_PROTECTION,
  PROTECTED_BRANCH_ACCESS_LEVELS,
  PROTECTED_BRANCH_ACCESS_LEVEL_NAMES,
  protectedAccessAllows,
  protectedBranchMatches,
} from "./services/protected-branches.js";
export type { ProtectBranchInput, ProtectedBranch, ProtectedBranchService } from "./services/protected-branches.js";
export type { Agent, AgentService } from "./services/agents.js";
export { MAX_ACTIVE_AGENT_TOKENS } from "./services/agent-tokens.js";
export type { AgentToken, AgentTokenService, AuthenticatedAgent, CreateAgentTokenInput } from "./services/agent-tokens.js";
export { PERSONAL_ACCESS_TOKEN_SCOPES } from "./services/personal-access-tokens.js";
export type {
  CreatePersonalAccessTokenInput,
  PersonalAccessToken,
  PersonalAccessTokenService,
} from "./services/personal-access-tokens.js";
export type { RevocationFeedPage, RevocationListener, RevocationService } from "./services/revocations.js";
export type { AuditEvent, AuditEventInput, AuditFilter, AuditTrail, AuditTrailOptions } from "./audit/audit-trail.js";
export { startAuditPruning } from "./audit/audit-pruning.js";
export { DEFAULT_WORKSPACE_TOOL_IMAGES } from "./remote-development/workspace-tools.js";
export type { WorkspaceToolImages } from "./remote-development/workspace-tools.js";
export type { AuditPruning } from "./audit/audit-pruning.js";

export { createAgentConfigService, emptyAgentConfig } from "./agent-config/agent-config-service.js";
export type {
  AgentConfigApplyOutcome,
  AgentConfigChange,
  AgentConfigChangeListener,
  AgentConfigFeedPage,
  AgentConfigRejection,
  AgentConfigService,
  AgentConfigServiceOptions,
  AgentConfigState,
} from "./agent-config/agent-config-service.js";
export { AUTHORIZED_ENTITY_LIMIT } from "./agent-config/authorizations.js";
export type {
  AllowedAgent,
  CiAccessAuthorizationConfig,
  UserAccessAuthorization,
  UserAccessAuthorizationConfig,
  UserAccessFilter,
} from "./agent-config/authorizations.js";
export { AGENT_CONFIG_DIRECTORY, AGENT_CONFIG_FILE_NAME, agentConfigPath, agentNameOfConfigPath } from "./agent-config/repository.js";
export type { AgentConfigRepositories, PushSource, RepositoryReader } from "./agent-config/repository.js";

export { createPlatformApi, DEFAULT_REST_BODY_LIMIT_BYTES } from "./api/rest-api.js";
export { createVulnerabilityService, ACTIVE_STATES, REPORT_TYPE as CLUSTER_IMAGE_SCANNING_REPORT_TYPE } from "./vulnerabilities/vulnerabilities.js";
export type { ScanRequest, StateAction, Vulnerability, VulnerabilityFilters, VulnerabilityService, VulnerabilityState } from "./vulnerabilities/vulnerabilities.js";
export { ADMIN_VULNERABILITY_ACCESS_LEVEL, STARBOARD_VULNERABILITY_MODULE, starboardVulnerabilityModule } from "./vulnerabilities/starboard-module.js";
export { READ_VULNERABILITY_ACCESS_LEVEL } from "./vulnerabilities/vulnerabilities-api.js";
export { findingUuid, identifierFingerprint, locationFingerprint, uuidV5 } from "./vulnerabilities/finding-identity.js";
export { createVulnerabilityMetrics } from "./vulnerabilities/vulnerability-metrics.js";
export { MANAGE_AGENTS_ACCESS_LEVEL, READ_AGENTS_ACCESS_LEVEL } from "./api/cluster-agents-api.js";
export type { PlatformApiOptions } from "./api/rest-api.js";
export { DEFAULT_INTERNAL_API_BODY_LIMIT_BYTES, createInternalApi } from "./api/internal-api.js";
export type { InternalApiOptions } from "./api/internal-api.js";

export { MANAGE_PROTECTED_BRANCHES_ACCESS_LEVEL } from "./api/protected-branches-api.js";
export { BodyTooLargeError, bodyTooLargeMessage } from "./api/body-limit.js";
export type { BodyLimit } from "./api/body-limit.js";

export {
  createGitHttpRouter,
  DEFAULT_GIT_MAX_BODY_BYTES,
  GIT_DOWNLOAD_ACCESS_LEVEL,
  GIT_PUSH_ACCESS_LEVEL,
  GIT_READ_SCOPES,
  GIT_WRITE_SCOPES,
} from "./git/git-http-router.js";
export type { GitHttpRouterOptions } from "./git/git-http-router.js";
export { BRANCH_PROTECTION_MESSAGES, decidePush } from "./git/branch-protection.js";
export type { PushCommand, PushPolicyInput, RefDecision } from "./git/branch-protection.js";
export { POST_RECEIVE_HOOK, PRE_RECEIVE_HOOK, PUSH_REPORT_ENV, PUSH_RULES_ENV } from "./git/repositories.js";
export type { PushSession, RepositoryEntry, RepositoryFile, RepositoryService } from "./git/repositories.js";
export type { PushEvent, PushListener, RefUpdate } from "./git/push-events.js";

export {
  CI_JOB_FINISHED_STATUSES,
  CI_JOB_STATUSES,
  DEFAULT_CI_JOB_TOKEN_TTL_MS,
  createCiJobService,
} from "./ci/ci-jobs.js";
export type {
  AuthenticatedCiJob,
  CiEnvironment,
  CiJob,
  CiJobAllowedAgents,
  CiJobFinishedStatus,
  CiJobService,
  CiJobServiceDeps,
  CiJobServiceOptions,
  CiJobStatus,
  CreateCiJobInput,
} from "./ci/ci-jobs.js";
export { CI_JOB_TOKEN_PREFIX, generateCiJobToken } from "./ci/job-tokens.js";
export {
  ENVIRONMENT_TIERS,
  authorizationAppliesToEnvironment,
  environmentNameErrors,
  environmentPatternMatches,
  environmentSlug,
  guessEnvironmentTier,
} from "./ci/environments.js";
export type { EnvironmentTier } from "./ci/environments.js";
export { KUBECONFIG_CLUSTER_NAME, buildKubeconfig, ciProxyToken, generateKubeconfig } from "./ci/kubeconfig.js";
export type { KubeconfigAgent, KubeconfigInput } from "./ci/kubeconfig.js";
export { rolesForAccessLevel } from "./ci/roles.js";
export { K8S_PROXY_SCOPE, PROXY_USER_ACCESS_TYPES, createProxyUserAuthorizationService } from "./user-access/proxy-user-authorization.js";
export type {
  AuthorizeProxyUserInput,
  ProxyUserAccessAs,
  ProxyUserAccessType,
  ProxyUserAuthorization,
  ProxyUserAuthorizationDeps,
  ProxyUserAuthorizationResult,
  ProxyUserAuthorizationService,
  ProxyUserRefusal,
  ProxyUserRoles,
} from "./user-access/proxy-user-authorization.js";
export { DEFAULT_K8S_PROXY_URL, RUN_CI_JOBS_ACCESS_LEVEL } from "./ci/ci-api.js";

export { createInProcessPlatformClient } from "./client/in-process-platform-client.js";
export type { InProcessPlatformClientOptions } from "./client/in-process-platform-client.js";
export type { AgentModuleHandler, AgentModuleRequest, AgentModuleResponse, ModuleRequestService } from "./module-requests/module-requests.js";

export { createPlatformApp } from "./platform-app.js";
export type { PlatformAppOptions } from "./platform-app.js";

export { ADMIN_TOKEN_FILE_NAME, ADMIN_USERNAME, bootstrapAdmin } from "./bootstrap.js";
export type { BootstrapAdminOptions, BootstrapAdminResult } from "./bootstrap.js";

// Push notifications to KAS (GitLab's NotifyGitPushWorker) and the projects agents may read
export { createGitPushNotifier } from "./kas/git-push-notifier.js";
export type { GitPushNotifier, GitPushNotifierOptions } from "./kas/git-push-notifier.js";
