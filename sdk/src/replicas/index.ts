// @kasbridge/sdk/replicas: several KAS replicas on one Redis (createKasServer's `redis` option) and
// its parts: the Redis connection, GitLab's keys, the tunnel and agent registries, routing between
// replicas through their private APIs.

export { connectRedis, createRedisClient, redactedUrl } from "../redis/redis-connection.js";
export type { RedisConnectionOptions } from "../redis/redis-connection.js";
export { RedisAvailability } from "../redis/redis-availability.js";
export { DEFAULT_REDIS_KEY_PREFIX, int64Key, redisKeys } from "../redis/redis-keys.js";
export { ExpiringHashes } from "../redis/expiring-hash.js";
export { startKasReplicas } from "./kas-replicas.js";
export type { KasRedisOptions, KasReplicas } from "./kas-replicas.js";
export { callThroughReplica, RoutingAgentCalls } from "./kas-router.js";
export type { RoutingAgentCallsOptions } from "./kas-router.js";
export { PeerSessions } from "./peer-sessions.js";
export type { PeerSessionsOptions } from "./peer-sessions.js";
export { RedisTunnelTracker } from "./tunnel-tracker.js";
export { RedisAgentConnections, decodeConnection, encodeConnection } from "./agent-connections.js";
export { RedisReplicaEvents, replicatedPlatformClient } from "./replica-events.js";
export type { ReplicaEventsOptions } from "./replica-events.js";
export { RedisConnectionLimiter } from "./connection-limiter.js";
