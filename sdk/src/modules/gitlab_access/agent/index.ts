// @kasbridge/sdk/modules/gitlab_access/agent: for agent modules that call the platform.
export { gitlabAccessClient } from "./gitlab-access-client.js";
export type { GitlabAccessClient, GitlabAccessClientOptions, GitlabAccessRequest, GitlabAccessResponse } from "./gitlab-access-client.js";
