// @kasbridge/sdk/modules/workspaces_proxy/agent
export { workspacesProxyAgentModule } from "./workspaces-proxy-agent-module.js";
export type { WorkspacesProxyAgentModuleOptions } from "./workspaces-proxy-agent-module.js";
export { WORKSPACE_CONNECT_MODES } from "./workspace-target.js";
export type { WorkspaceConnectMode } from "./workspace-target.js";
export { AGENT_ID_LABEL, WORKSPACE_ID_ANNOTATION, WORKSPACES_PROXY_METHOD } from "../rpc.js";
