// @kasbridge/sdk/modules/gitlab_access/server
export { gitlabAccessServerModule } from "./gitlab-access-module.js";
export type { GitlabAccessServerModuleOptions } from "./gitlab-access-module.js";
