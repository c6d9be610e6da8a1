// @kasbridge/sdk/modules/gitops/server: Gitops/GetObjectsToSynchronize and kasbridge's GitOps status, the KAS half.
export { gitopsServerModule, MANIFEST_CHUNK_BYTES } from "./gitops-server-module.js";
export type { GitopsServerModuleOptions } from "./gitops-server-module.js";
export { globMatcher, GlobSyntaxError } from "./glob.js";
