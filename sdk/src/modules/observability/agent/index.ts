// @kasbridge/sdk/modules/observability/agent
export { AGENT_OBSERVABILITY_LIMITS, observabilityAgentModule } from "./observability-agent-module.js";
export type { ObservabilityAgentModule, ObservabilityAgentModuleOptions } from "./observability-agent-module.js";
