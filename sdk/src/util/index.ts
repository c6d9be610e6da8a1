// @kasbridge/sdk/util: small helpers the SDK uses and shares with embedders.

export { Backoff, sleep } from "./backoff.js";
export type { BackoffOptions } from "./backoff.js";
export { drained } from "./drained.js";
export { hostPort, parseListenAddress } from "./host-port.js";
export { listen } from "./listen.js";
export { waitUntil } from "./timers.js";
export { installProcessSafetyNet } from "./process-safety-net.js";
export type { ProcessSafetyNetOptions, SafetyNetLogger, UncaughtKind } from "./process-safety-net.js";
export { LINGER_MAX_BYTES, LINGER_MAX_MS, drainRefusedBody } from "./refused-body.js";
