// @kasbridge/sdk/modules/observability/server
export { createObservabilityServer, OBSERVABILITY_LIMITS } from "../observability-http-server.js";
export type { ObservabilityServer, ObservabilityServerOptions } from "../observability-http-server.js";
export { observabilityServerModule } from "./observability-server-module.js";
export type { ObservabilityServerModuleOptions } from "./observability-server-module.js";
