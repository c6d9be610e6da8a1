// @kasbridge/sdk/modules/agent_registrar/agent
export { AgentRegistration, agentRegistrarAgentModule } from "./agent-registrar-module.js";
export type { AgentRegistrarModuleOptions } from "./agent-registrar-module.js";
