// @kasbridge/sdk/modules/configuration_project/server: ConfigurationProject/ListAgentConfigFiles on KAS's internal API.
export { configurationProjectServerModule } from "./configuration-project-server-module.js";
export type { ConfigurationProjectServerModuleOptions } from "./configuration-project-server-module.js";
