// @kasbridge/sdk/modules/observability/agent
export { observabilityAgentModule } from "./observability-agent-module.js";
