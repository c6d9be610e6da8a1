// @kasbridge/sdk/modules/workspaces_proxy/server
export { workspacesProxyServerModule } from "./workspaces-proxy-module.js";
export type { WorkspacesProxyServerModule, WorkspacesProxyServerModuleOptions } from "./workspaces-proxy-module.js";
export { createWorkspacesProxy, WORKSPACE_SESSION_COOKIE, WORKSPACES_PROXY_LIMITS } from "./workspaces-proxy.js";
export type { WorkspacesProxy, WorkspacesProxyOptions } from "./workspaces-proxy.js";
export { WorkspaceProxyError } from "./workspace-authorizer.js";
export { hostName, parseWorkspaceHost } from "../workspace-host.js";
export type { WorkspaceHost } from "../workspace-host.js";
export { AGENT_ID_LABEL, WORKSPACE_ID_ANNOTATION, WORKSPACES_PROXY_METHOD } from "../rpc.js";
