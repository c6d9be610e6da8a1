// @kasbridge/sdk/modules/agent_configuration/agent
export { agentConfigurationAgentModule } from "./configuration-watcher.js";
