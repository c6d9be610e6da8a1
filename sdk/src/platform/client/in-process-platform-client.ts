import { allowedAgentsForJobEntity, proxyUserAuthorizationEntity } from "../api/entities.js";
import {
  PlatformError,
  RepositoryFileTooLargeError,
  parseJobAllowedAgents,
  parseProxyUserAuthorization,
  type AgentConfigurationSnapshot,
  type AgentInfo,
  type JobAllowedAgents,
  type PlatformClient,
  type ProjectInfo,
  type ProxyUserAuthorizationAnswer,
} from "../platform-client.js";
import type { PlatformServices } from "../services/platform-services.js";
import { projectReadableByAgent } from "../gitops/agent-project-access.js";
import { recordGitopsStatus } from "../gitops/gitops-status.js";
import { readCapped } from "../gitops/repository-reads.js";

/** Runs a platform read; a failure of the store or of git is "unavailable" (KAS retries). */
async function unavailableOnFailure<T>(read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (err) {
    if (err instanceof RepositoryFileTooLargeError) throw err;
    throw new PlatformError("unavailable", `platform read failed: ${(err as Error).message}`, { cause: err });
  }
}

/**
 * PlatformClient backed directly by our platform services, for a KAS and platform in one process.
 * Revocations and configuration changes are delivered synchronously from the call that made them,
 * right after its transaction commits.
 */
export function createInProcessPlatformClient(services: PlatformServices): PlatformClient {
  /** The project at `fullPath` if the token's agent may read it (see projectReadableByAgent). */
  async function readableProject(agentToken: string, fullPath: string, signal?: AbortSignal) {
    signal?.throwIfAborted();
    let found;
    let project;
    try {
      found = await services.agentTokens.authenticate(agentToken);
      project = found && (await projectReadableByAgent(services, found, fullPath));
    } catch (err) {
      throw new PlatformError("unavailable", "platform store unavailable", { cause: err });
    }
    if (!found) throw new PlatformError("unauthenticated", "unknown or revoked agent token");
    return project;
  }

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

    async verifyProjectAccess(agentToken: string, fullPath: string, signal?: AbortSignal): Promise<boolean> {
      return (await readableProject(agentToken, fullPath, signal)) !== undefined;
    },

    async getProjectInfo(agentToken: string, fullPath: string, signal?: AbortSignal): Promise<ProjectInfo> {
      const project = await readableProject(agentToken, fullPath, signal);
      if (!project) throw new PlatformError("not_found", `project_info: project ${fullPath} not found`);
      return { projectId: project.id, defaultBranch: project.defaultBranch, fullPath: project.pathWithNamespace };
    },

    async resolveRepositoryRevision(projectId, revision, signal) {
      signal?.throwIfAborted();
      return unavailableOnFailure(() => services.repositories.resolveRef(projectId, revision));
    },

    async listRepositoryFiles(projectId, commit, signal) {
      signal?.throwIfAborted();
      const files = await unavailableOnFailure(() => services.repositories.listFiles(projectId, commit));
      if (!files) throw new PlatformError("not_found", `commit ${commit} not found`);
      return files.map((f) => f.path);
    },

    async readRepositoryFile(projectId, commit, path, maxBytes, signal) {
      const file = await unavailableOnFailure(() => services.repositories.openFile(projectId, commit, path));
      if (!file) return undefined;
      if (file.size > maxBytes) throw new RepositoryFileTooLargeError(path, maxBytes);
      return readCapped(file.stream(signal), path, maxBytes);
    },

    async reportGitopsStatus(agentToken, status, signal) {
      signal?.throwIfAborted();
      const found = await unavailableOnFailure(() => services.agentTokens.authenticate(agentToken));
      if (!found) throw new PlatformError("unauthenticated", "unknown or revoked agent token");
      await unavailableOnFailure(() => recordGitopsStatus(services.store.knex, found.agent.id, status, new Date()));
    },
  };
}
