import pino from "pino";
import type { Logger } from "pino";
import type { Registry } from "prom-client";
import { createRepositoryService, type RepositoryService } from "../git/repositories.js";
import { createAgentConfigService, type AgentConfigService } from "../agent-config/agent-config-service.js";
import { createCiJobService, type CiJobService } from "../ci/ci-jobs.js";
import { createProxyUserAuthorizationService, type ProxyUserAuthorizationService } from "../user-access/proxy-user-authorization.js";
import { createModuleRequestService, type ModuleRequestService } from "../module-requests/module-requests.js";
import { createUsageMetricsService, type UsageMetricsService } from "../usage-metrics/usage-metrics.js";
import { createAuditTrail, type AuditTrail } from "../audit/audit-trail.js";
import { STARBOARD_VULNERABILITY_MODULE, starboardVulnerabilityModule } from "../vulnerabilities/starboard-module.js";
import { createVulnerabilityMetrics } from "../vulnerabilities/vulnerability-metrics.js";
import { createVulnerabilityService, type VulnerabilityService } from "../vulnerabilities/vulnerabilities.js";
import type { Store } from "../store/store.js";
import { createAgentTokenService, type AgentTokenService } from "./agent-tokens.js";
import { createAgentService, type AgentService } from "./agents.js";
import type { ServiceContext } from "./context.js";
import { createMemberService, type MemberService } from "./members.js";
import { createNamespaceService, type NamespaceService } from "./namespaces.js";
import { createPersonalAccessTokenService, type PersonalAccessTokenService } from "./personal-access-tokens.js";
import { createProjectService, type ProjectService } from "./projects.js";
import { createProtectedBranchService, type ProtectedBranchService } from "./protected-branches.js";
import { createRevocationService, type RevocationService } from "./revocations.js";
import { UsageThrottle } from "./usage-throttle.js";
import { createUserService, type UserService } from "./users.js";
import { registerRemoteDevelopmentModule } from "../remote-development/reconcile-endpoint.js";
import { createWorkspaceService, type WorkspaceService } from "../remote-development/workspaces.js";
import { createWorkspaceAccessService, type WorkspaceAccessService } from "../remote-development/workspace-access.js";
import { SecretBox } from "../util/secret-box.js";
import type { WorkspaceToolImages } from "../remote-development/workspace-tools.js";

export interface PlatformServicesOptions {
  store: Store;
  /** Default: a silent logger. */
  logger?: Logger;
  /** Clock. Default `() => new Date()`; tests inject one to exercise throttling and expiry. */
  now?: () => Date;
  /** Minimum time between two `last_used_at` writes for one token. Default 60 000 ms. */
  lastUsedThrottleMs?: number;
  /** How long the revocation feed keeps entries. Default 24 h. */
  revocationRetentionMs?: number;
  /** How long the agent configuration change feed keeps entries. Default 24 h. */
  agentConfigFeedRetentionMs?: number;
  /**
   * Directory of the projects' bare git repositories (`<dir>/<project id>.git`), created if
   * missing. Default: none, and `repositories` is disabled (its methods throw).
   */
  repositoriesDir?: string;
  /** The git executable for repositories. Default "git" from PATH. */
  gitBinary?: string;
  /** How long the audit trail keeps entries. Default 90 days (7 776 000 000 ms). */
  auditRetentionMs?: number;
  /** Lifetime of a CI job token (it also stops working when its job finishes). Default 3 600 000 ms (1 h). */
  ciJobTokenTtlMs?: number;
  /**
   * Key material of the tokens that let browsers reach workspaces (workspace-access.ts). Default:
   * random per process, so browser sessions on workspaces end when the platform restarts.
   */
  workspaceTokenSecret?: Uint8Array;
  /** Lifetime of a browser session on a workspace host, in ms. Default 8 h. */
  workspaceSessionTtlMs?: number;
  /** Where the platform's metrics (`platform_vulnerabilit*`) are registered. Default: none kept. */
  metrics?: Registry;
  /**
   * Key (at least 32 random bytes) for values the platform stores encrypted: workspace variables.
   * Default: none, and workspaces with variables are refused. Replicas on one database share it.
   */
  encryptionKey?: Uint8Array;
  /** Images of the workspace editor injector and project cloner. Default GitLab's. */
  workspaceToolImages?: WorkspaceToolImages;
}

/** The platform's business logic over one store. Authorization is left to the callers (REST API). */
export interface PlatformServices {
  readonly store: Store;
  readonly users: UserService;
  /** Personal namespaces and groups. */
  readonly namespaces: NamespaceService;
  readonly projects: ProjectService;
  /** Protected branch rules, enforced on every push over git (see git/branch-protection.ts). */
  readonly protectedBranches: ProtectedBranchService;
  readonly members: MemberService;
  readonly agents: AgentService;
  readonly agentTokens: AgentTokenService;
  readonly personalAccessTokens: PersonalAccessTokenService;
  readonly revocations: RevocationService;
  /** Agent config files: accepted configs, rejections, change feed, CI/user access authorizations. */
  readonly agentConfigs: AgentConfigService;
  /** Each project's git repository: files, refs, push events. */
  readonly repositories: RepositoryService;
  /** CI jobs, their job tokens, and the agents a job may use (ci_access). */
  readonly ciJobs: CiJobService;
  /** `authorize_proxy_user`: a user's access to an agent's cluster through KAS (user_access). */
  readonly proxyUserAuthorization: ProxyUserAuthorizationService;
  /** The platform halves of agent modules, answering their requests through KAS (gitlab_access). */
  readonly moduleRequests: ModuleRequestService;
  /** Usage events KAS reports (GitLab's usage_metrics). */
  readonly usageMetrics: UsageMetricsService;
  /** The audit trail: Kubernetes API requests through KAS, agent activity. */
  readonly audit: AuditTrail;
  /** Operational container scanning: vulnerabilities agents report, their states, requested scans. */
  readonly vulnerabilities: VulnerabilityService;
  /** Remote development workspaces; their reconcile endpoint is registered on `moduleRequests`. */
  readonly workspaces: WorkspaceService;
  /** Who may reach a workspace through KAS's workspace proxy, and the browser tokens for it. */
  readonly workspaceAccess: WorkspaceAccessService;
}

export function createPlatformServices(options: PlatformServicesOptions): PlatformServices {
  const ctx: ServiceContext = {
    store: options.store,
    knex: options.store.knex,
    now: options.now ?? (() => new Date()),
    logger: options.logger ?? pino({ level: "silent" }),
  };
  const throttleMs = options.lastUsedThrottleMs ?? 60_000;
  const namespaces = createNamespaceService(ctx);
  const baseProjects = createProjectService(ctx, namespaces);
  const repositories = createRepositoryService(
    ctx,
    { projects: baseProjects },
    { repositoriesDir: options.repositoriesDir, gitBinary: options.gitBinary },
  );
  const projects: ProjectService = {
    ...baseProjects,
    // Every project gets its repository when it is created (or, should that fail, on first access).
    async create(input, creatorId) {
      const project = await baseProjects.create(input, creatorId);
      await repositories.projectCreated(project);
      return project;
    },
  };
  const revocations = createRevocationService(ctx, { retentionMs: options.revocationRetentionMs });
  const audit = createAuditTrail(ctx, { retentionMs: options.auditRetentionMs });
  const agentConfigs = createAgentConfigService(ctx, { feedRetentionMs: options.agentConfigFeedRetentionMs, audit });
  // Pushes to a config project's default branch update its agents' configs.
  if (repositories.enabled) agentConfigs.attach(repositories);
  const baseAgents = createAgentService(ctx, revocations);
  const agents: AgentService = {
    ...baseAgents,
    // An agent created after its config file was pushed gets that config at once.
    async create(projectId, name, createdByUserId) {
      const agent = await baseAgents.create(projectId, name, createdByUserId);
      try {
        await agentConfigs.syncAgent(agent.id);
      } catch (err) {
        ctx.logger.error({ err, agentId: agent.id }, "cannot read the new agent's configuration");
      }
      return agent;
    },
  };
  const members = createMemberService(ctx, namespaces);
  const personalAccessTokens = createPersonalAccessTokenService(ctx, { throttle: new UsageThrottle(throttleMs), revocations });
  const users = createUserService(ctx, { revocations });
  const moduleRequests = createModuleRequestService(ctx.logger.child({ component: "module-requests" }));
  const vulnerabilities = createVulnerabilityService(ctx);
  // The platform's half of starboard_vulnerability answers agents' scans (through KAS, gitlab_access).
  moduleRequests.register(
    STARBOARD_VULNERABILITY_MODULE,
    starboardVulnerabilityModule({
      vulnerabilities,
      users,
      members,
      metrics: options.metrics && createVulnerabilityMetrics(options.metrics, vulnerabilities),
      logger: ctx.logger.child({ component: STARBOARD_VULNERABILITY_MODULE }),
    }),
  );
  const workspaces = createWorkspaceService(ctx, {
    agents,
    projects,
    agentConfigs,
    repositories,
    users,
    personalAccessTokens,
    secrets: options.encryptionKey && new SecretBox(options.encryptionKey, "workspace variables"),
    toolImages: options.workspaceToolImages,
  });
  registerRemoteDevelopmentModule(moduleRequests, workspaces);
  return {
    store: options.store,
    users,
    namespaces,
    projects,
    protectedBranches: createProtectedBranchService(ctx),
    members,
    agents,
    agentTokens: createAgentTokenService(ctx, { projects, revocations, throttle: new UsageThrottle(throttleMs) }),
    personalAccessTokens,
    revocations,
    agentConfigs,
    repositories,
    ciJobs: createCiJobService(ctx, { projects, namespaces, members, agentConfigs, revocations }, { tokenTtlMs: options.ciJobTokenTtlMs }),
    proxyUserAuthorization: createProxyUserAuthorizationService({
      personalAccessTokens,
      agents,
      projects,
      namespaces,
      members,
      agentConfigs,
    }),
    moduleRequests,
    vulnerabilities,
    workspaces,
    workspaceAccess: createWorkspaceAccessService({
      workspaces,
      users,
      personalAccessTokens,
      secret: options.workspaceTokenSecret,
      sessionTtlMs: options.workspaceSessionTtlMs,
      now: ctx.now,
    }),
    usageMetrics: createUsageMetricsService(ctx),
    audit,
  };
}
