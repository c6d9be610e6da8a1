// @kasbridge/sdk/modules/agent_configuration/server
export { agentConfigurationServerModule } from "./agent-configuration-module.js";
export type { AgentConfigurationServerModuleOptions } from "./agent-configuration-module.js";
export { noConfigCommitId, toAgentConfiguration } from "./to-agent-configuration.js";
