import { PlatformError, RepositoryFileTooLargeError, type PlatformClient, type ProjectInfo } from "@kasbridge/sdk/platform-client";
import { ServiceError } from "../services/errors.js";
import type { PlatformServices } from "../services/platform-services.js";
import { projectReadableByAgent } from "./agent-project-access.js";
import { recordGitopsStatus } from "./gitops-status.js";
import { readCapped } from "./repository-reads.js";

/** The PlatformClient methods the Flux and GitOps modules use, served by our platform in process. */
export type GitopsPlatformMethods = Required<
  Pick<PlatformClient, "verifyProjectAccess" | "getProjectInfo" | "resolveRepositoryRevision" | "listRepositoryFiles" | "readRepositoryFile" | "reportGitopsStatus">
>;

/** Runs a platform read; an unknown project is "not_found", a failure of the store or of git "unavailable" (KAS retries). */
async function unavailableOnFailure<T>(read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (err) {
    if (err instanceof RepositoryFileTooLargeError) throw err;
    if (err instanceof ServiceError && err.kind === "not_found") throw new PlatformError("not_found", err.message, { cause: err });
    throw new PlatformError("unavailable", `platform read failed: ${(err as Error).message}`, { cause: err });
  }
}

/** What `createInProcessPlatformClient` answers for Flux and GitOps (as the internal API does over HTTP). */
export function inProcessGitopsMethods(services: PlatformServices): GitopsPlatformMethods {
  /** The project at `fullPath` if the token's agent may read it (see projectReadableByAgent). */
  async function readableProject(agentToken: string, fullPath: string, signal?: AbortSignal) {
    signal?.throwIfAborted();
    const found = await unavailableOnFailure(() => services.agentTokens.authenticate(agentToken));
    if (!found) throw new PlatformError("unauthenticated", "unknown or revoked agent token");
    return unavailableOnFailure(() => projectReadableByAgent(services, found, fullPath));
  }

  return {
    async verifyProjectAccess(agentToken, fullPath, signal) {
      return (await readableProject(agentToken, fullPath, signal)) !== undefined;
    },

    async getProjectInfo(agentToken, fullPath, signal): Promise<ProjectInfo> {
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
