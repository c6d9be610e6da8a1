// @kasbridge/sdk/modules/flux/server: GitLabFlux/ReconcileProjects, the KAS half.
export { fluxServerModule } from "./flux-server-module.js";
export type { FluxServerModuleOptions } from "./flux-server-module.js";
