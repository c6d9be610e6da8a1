// @kasbridge/sdk/modules/observability/server
export { createObservabilityServer, observabilityServerModule, OBSERVABILITY_LIMITS } from "./observability-server.js";
export type { ObservabilityServer, ObservabilityServerModuleOptions, ObservabilityServerOptions } from "./observability-server.js";
