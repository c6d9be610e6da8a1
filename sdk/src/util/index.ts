// @kasbridge/sdk/util: small helpers the SDK uses and shares with embedders.

export { Backoff, sleep } from "./backoff.js";
export type { BackoffOptions } from "./backoff.js";
export { drained } from "./drained.js";
export { hostPort } from "./host-port.js";
export { listen } from "./listen.js";
export { waitUntil } from "./timers.js";
