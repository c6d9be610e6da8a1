// @kasbridge/sdk/modules/gitops/agent: built-in GitOps (gitops.manifest_projects), the agent half.
export { gitopsAgentModule } from "./gitops-agent-module.js";
export type { GitopsAgentModuleOptions } from "./gitops-agent-module.js";
export { decodeManifests, ManifestError, ManifestsInvalidError } from "./manifest-decoder.js";
export type { DecodedObject, ManifestObject } from "./manifest-decoder.js";
export { manifestProjects, DEFAULT_MANIFEST_GLOB } from "./manifest-project.js";
export type { ManifestProjectSettings } from "./manifest-project.js";
