import { allowedAgentsForJobEntity, proxyUserAuthorizationEntity } from "../api/entities.js";
import {
  PlatformError,
  parseJobAllowedAgents,
  parseProxyUserAuthorization,
  type AgentConfigurationSnapshot,
  type AgentInfo,
  type JobAllowedAgents,
  type PlatformClient,
  type ProxyUserAuthorizationAnswer,
} from "@kasbridge/sdk/platform-client";
import type { PlatformServices } from "../services/platform-services.js";

/**
 * PlatformClient backed directly by our platform services, for a KAS and platform in one process.
 * Revocations and configuration changes are delivered synchronously from the call that made them,
 * right after its transaction commits.
 */
export function createInProcessPlatformClient(services: PlatformServices): PlatformClient {
  return {
    async getAgentInfo(agentToken: string, signal?: AbortSignal): Promise<AgentInfo> {
      signal?.throwIfAborted();
      let found;
      try {
        found = await services.agentTokens.authenticate(agentToken);
      } catch (err) {
        throw new PlatformError("unavailable", "platform store unavailable", { cause: err });
      }
      if (!found) throw new PlatformError("unauthenticated", "unknown or revoked agent token");
      return {
        agentId: found.agent.id,
        agentName: found.agent.name,
        projectId: found.project.id,
        projectPath: found.project.pathWithNamespace,
        defaultBranch: found.project.defaultBranch,
        tokenId: found.token.id,
      };
    },

    watchTokenRevocations(onRevoked, signal) {
      if (signal.aborted) return;
      const unsubscribe = services.revocations.subscribe(onRevoked);
      signal.addEventListener("abort", unsubscribe, { once: true });
    },

    async getAgentConfiguration(agentId: number, signal?: AbortSignal): Promise<AgentConfigurationSnapshot> {
      signal?.throwIfAborted();
      let snapshot;
      try {
        snapshot = await services.agentConfigs.snapshot(agentId);
      } catch (err) {
        throw new PlatformError("unavailable", "platform store unavailable", { cause: err });
      }
      if (!snapshot) throw new PlatformError("not_found", `agent ${agentId} not found`);
      return snapshot;
    },

    watchAgentConfigurations(onChange, signal) {
      if (signal.aborted) return;
      const unsubscribe = services.agentConfigs.subscribe((change) => onChange(change.agentId));
      signal.addEventListener("abort", unsubscribe, { once: true });
    },

    // Both answers go through the same entities and parsers as the HTTP API, so the two clients agree.
    async allowedAgentsForJob(jobToken: string, signal?: AbortSignal): Promise<JobAllowedAgents> {
      signal?.throwIfAborted();
      let allowed;
      try {
        allowed = await services.ciJobs.allowedAgentsForJob(jobToken);
      } catch (err) {
        throw new PlatformError("unavailable", "platform store unavailable", { cause: err });
      }
      if (!allowed) throw new PlatformError("unauthenticated", "unknown, expired or finished job token");
      return parseJobAllowedAgents(JSON.parse(JSON.stringify(allowedAgentsForJobEntity(allowed))));
    },

    async authorizeProxyUser(request, signal?: AbortSignal): Promise<ProxyUserAuthorizationAnswer> {
      signal?.throwIfAborted();
      let result;
      try {
        result = await services.proxyUserAuthorization.authorizeProxyUser({
          agentId: request.agentId,
          accessType: request.accessType,
          accessKey: request.accessKey,
        });
      } catch (err) {
        throw new PlatformError("unavailable", "platform store unavailable", { cause: err });
      }
      if (!result.ok) {
        const kind = result.status === 401 ? "unauthenticated" : result.status === 404 ? "not_found" : "forbidden";
        throw new PlatformError(kind, `authorize_proxy_user: ${result.message}`);
      }
      return parseProxyUserAuthorization(JSON.parse(JSON.stringify(proxyUserAuthorizationEntity(result.authorization))));
    },
  };
}
