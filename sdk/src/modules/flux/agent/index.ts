// @kasbridge/sdk/modules/flux/agent: GitLab's Flux integration, the agent half.
export { fluxAgentModule, crdEstablished } from "./flux-agent-module.js";
export type { FluxAgentModuleOptions } from "./flux-agent-module.js";
export { DEFAULT_WEBHOOK_RECEIVER_URL } from "./reconcile-trigger.js";
