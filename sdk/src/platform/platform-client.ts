import type { ConfigurationFile } from "../gen/gitlab/agent/agentcfg/agentcfg_pb.js";

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

/** A token revocation, delivered so KAS can close the tunnels that used the token. */
export interface TokenRevocation {
  agentId: number;
  tokenId: number;
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
   * Calls `onRevoked` for every agent token revoked from now on, until `signal` aborts. Delivery
   * target: within a second of the revocation.
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
}
