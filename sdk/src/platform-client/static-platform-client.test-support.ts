import { create } from "@bufbuild/protobuf";
import { ConfigurationFileSchema, type ConfigurationFile } from "../gen/gitlab/agent/agentcfg/agentcfg_pb.js";
import {
  PlatformError,
  type AgentConfigurationSnapshot,
  type AgentInfo,
  type PlatformClient,
  type TokenRevocation,
} from "./platform-client.js";

/** A PlatformClient over a fixed token table, for unit tests of KAS parts. */
export class StaticPlatformClient implements PlatformClient {
  private readonly tokens = new Map<string, AgentInfo>();
  private readonly watchers = new Set<(r: TokenRevocation) => void>();
  private readonly configs = new Map<number, AgentConfigurationSnapshot>();
  private readonly configWatchers = new Set<(agentId: number) => void>();
  calls = 0;

  addToken(token: string, info: AgentInfo): void {
    this.tokens.set(token, info);
  }

  revoke(token: string): void {
    const info = this.tokens.get(token);
    if (!info) return;
    this.tokens.delete(token);
    this.publish({ kind: "agent_token", agentId: info.agentId, tokenId: info.tokenId ?? 0 });
  }

  /** Delivers a revocation to every watcher (as a platform's feed would). */
  publish(revocation: TokenRevocation): void {
    for (const w of [...this.watchers]) w(revocation);
  }

  async getAgentInfo(agentToken: string): Promise<AgentInfo> {
    this.calls++;
    const info = this.tokens.get(agentToken);
    if (!info) throw new PlatformError("unauthenticated", "unknown token");
    return info;
  }

  watchTokenRevocations(onRevoked: (revocation: TokenRevocation) => void, signal: AbortSignal): void {
    this.watchers.add(onRevoked);
    signal.addEventListener("abort", () => this.watchers.delete(onRevoked), { once: true });
  }

  setConfiguration(agentId: number, commitId: string, config: ConfigurationFile): void {
    this.configs.set(agentId, { agentId, commitId, config });
    for (const w of this.configWatchers) w(agentId);
  }

  /** getAgentConfiguration calls so far. */
  configurationReads = 0;

  async getAgentConfiguration(agentId: number): Promise<AgentConfigurationSnapshot> {
    this.configurationReads++;
    return this.configs.get(agentId) ?? { agentId, commitId: "", config: create(ConfigurationFileSchema) };
  }

  /** Full paths each agent (by token) may read, for verifyProjectAccess; a missing token: none. */
  readonly readableProjects = new Map<string, Set<string>>();
  /** verifyProjectAccess calls so far. */
  accessChecks = 0;

  async verifyProjectAccess(agentToken: string, fullPath: string): Promise<boolean> {
    this.accessChecks++;
    if (!this.tokens.has(agentToken)) throw new PlatformError("unauthenticated", "unknown token");
    return this.readableProjects.get(agentToken)?.has(fullPath) ?? false;
  }

  watchAgentConfigurations(onChange: (agentId: number) => void, signal: AbortSignal): void {
    this.configWatchers.add(onChange);
    signal.addEventListener("abort", () => this.configWatchers.delete(onChange), { once: true });
  }
}
