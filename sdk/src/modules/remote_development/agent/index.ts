// @kasbridge/sdk/modules/remote_development/agent: remote development workspaces, the agent half.
export { REMOTE_DEVELOPMENT_MODULE, remoteDevelopmentAgentModule } from "./remote-development-module.js";
export type { RemoteDevelopmentAgentModuleOptions } from "./remote-development-module.js";
export { DEFAULT_FULL_SYNC_INTERVAL_MS, DEFAULT_PARTIAL_SYNC_INTERVAL_MS, remoteDevelopmentLoopSettings } from "./remote-development-settings.js";
export type { RemoteDevelopmentLoopSettings } from "./remote-development-settings.js";
export { parseReconcileResponse, ReconcileResponseError } from "./reconcile-messages.js";
export type { ErrorType, ReconcileRequestBody, TerminationProgress, UpdateType, WorkspaceAgentInfo, WorkspaceRailsInfo } from "./reconcile-messages.js";
export { groupByInventory, WorkspaceConfigError } from "./workspace-config.js";
export type { InventoryGroup } from "./workspace-config.js";
export { AGENT_ID_LABEL } from "./deployment-informer.js";
export { REMOTE_DEVELOPMENT_RBAC_RULES } from "./rbac-rules.js";
