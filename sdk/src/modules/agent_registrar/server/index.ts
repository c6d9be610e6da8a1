// @kasbridge/sdk/modules/agent_registrar/server
export { agentRegistrarServerModule, agentRegistrarService } from "./agent-registrar-module.js";
