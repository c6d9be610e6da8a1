import pino from "pino";
import type { Logger } from "pino";
import type { Store } from "../store/store.js";
import { createAgentTokenService, type AgentTokenService } from "./agent-tokens.js";
import { createAgentService, type AgentService } from "./agents.js";
import type { ServiceContext } from "./context.js";
import { createMemberService, type MemberService } from "./members.js";
import { createNamespaceService, type NamespaceService } from "./namespaces.js";
import { createPersonalAccessTokenService, type PersonalAccessTokenService } from "./personal-access-tokens.js";
import { createProjectService, type ProjectService } from "./projects.js";
import { createRevocationService, type RevocationService } from "./revocations.js";
import { UsageThrottle } from "./usage-throttle.js";
import { createUserService, type UserService } from "./users.js";

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
}

/** The platform's business logic over one store. Authorization is left to the callers (REST API). */
export interface PlatformServices {
  readonly store: Store;
  readonly users: UserService;
  /** Personal namespaces and groups. */
  readonly namespaces: NamespaceService;
  readonly projects: ProjectService;
  readonly members: MemberService;
  readonly agents: AgentService;
  readonly agentTokens: AgentTokenService;
  readonly personalAccessTokens: PersonalAccessTokenService;
  readonly revocations: RevocationService;
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
  const projects = createProjectService(ctx, namespaces);
  const revocations = createRevocationService(ctx, { retentionMs: options.revocationRetentionMs });
  return {
    store: options.store,
    users: createUserService(ctx),
    namespaces,
    projects,
    members: createMemberService(ctx, namespaces),
    agents: createAgentService(ctx, revocations),
    agentTokens: createAgentTokenService(ctx, { projects, revocations, throttle: new UsageThrottle(throttleMs) }),
    personalAccessTokens: createPersonalAccessTokenService(ctx, { throttle: new UsageThrottle(throttleMs) }),
    revocations,
  };
}
