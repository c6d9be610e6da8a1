/**
 * Which projects an agent may read (GitLab's `agent_has_access_to_project?`): its own
 * configuration project, and any project a guest may read the code of (public ones). KAS asks
 * before it tells an agent about a push (Flux) and before it sends an agent a project's manifests
 * (GitOps), so an agent learns nothing about private projects of others.
 */
import type { AuthenticatedAgent } from "../services/agent-tokens.js";
import type { PlatformServices } from "../services/platform-services.js";
import type { Project } from "../services/projects.js";

/** The project at `fullPath` if `agent` may read it; undefined when it does not exist or may not. */
export async function projectReadableByAgent(
  services: PlatformServices,
  agent: AuthenticatedAgent,
  fullPath: string,
): Promise<Project | undefined> {
  const project = await services.projects.find(fullPath);
  if (!project) return undefined;
  return project.id === agent.project.id || project.visibility === "public" ? project : undefined;
}
