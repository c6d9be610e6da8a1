// @kasbridge/sdk/modules/usage_metrics/server
export { usageMetricsServerModule } from "./usage-metrics-module.js";
export type { UsageMetricsModuleOptions } from "./usage-metrics-module.js";
