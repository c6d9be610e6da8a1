import type { Redis } from "ioredis";
import type { Logger } from "pino";
import type { AgentTracker } from "../kas/agent-tracker.js";
import type { AgentConnectionsSource } from "../platform-client/connections.js";
import { ExpiringHashes } from "../redis/expiring-hash.js";
import { RedisAvailability } from "../redis/redis-availability.js";
import { DEFAULT_REDIS_KEY_PREFIX, redisKeys } from "../redis/redis-keys.js";
import type { TunnelRegistry } from "../tunnel/server/tunnel-registry.js";
import { RedisAgentConnections } from "./agent-connections.js";
import { RedisConnectionLimiter } from "./connection-limiter.js";
import type { AgentConnectionLimiter } from "../kas/connection-limiter.js";
import { RoutingAgentCalls, type RoutingAgentCallsOptions } from "./kas-router.js";
import { PeerSessions } from "./peer-sessions.js";
import { RedisTunnelTracker } from "./tunnel-tracker.js";

/** Several KAS replicas on one Redis (createKasServer's `redis` option). */
export interface KasRedisOptions {
  /** A connected client (`connectRedis`). The caller owns it and closes it after KAS. */
  client: Redis;
  /** Prefix of every key, as GitLab's `redis.key_prefix`. Default "gitlab-kas". */
  keyPrefix?: string;
  /**
   * This replica's private API URL as the other replicas reach it (`grpc://host:port` or
   * `grpcs://`; GitLab's OWN_PRIVATE_API_URL). Default: where the private API listens, a wildcard
   * address replaced by this machine's host name.
   */
  ownPrivateApiUrl?: string;
  /** CA bundle (PEM) to trust for other replicas' `grpcs://` private API URLs. Default: the system's. */
  privateApiCa?: string | Buffer;
  /** Lifetime of this replica's entries without a refresh. Default 300 000 ms (GitLab's `agent.redis_conn_info_ttl`). */
  registrationTtlMs?: number;
  /** How often this replica refreshes its entries. Default 240 000 ms (`agent.redis_conn_info_refresh`). */
  refreshIntervalMs?: number;
  /** How often expired entries of the hashes this replica writes are deleted. Default 600 000 ms (`agent.redis_conn_info_gc`). */
  gcIntervalMs?: number;
}

/** What the replicas share through Redis, for one KAS: registrations, routing, connection listings. */
export interface KasReplicas {
  readonly agentCalls: RoutingAgentCalls;
  readonly connections: Required<AgentConnectionsSource>;
  /** The per-token connection limit, counted in Redis (undefined when off). */
  readonly connectionLimiter?: AgentConnectionLimiter;
  readonly availability: RedisAvailability;
  readonly keys: ReturnType<typeof redisKeys>;
  /** Withdraws this replica from Redis (routers stop choosing it); at the start of shutdown. */
  withdraw(): Promise<void>;
  /** Stops everything (after `withdraw`); does not close the Redis client. */
  close(): void;
}

/**
 * Connects one KAS to the others through Redis: registers its tunnels and agent connections
 * (refreshed, garbage-collected, rewritten after a Redis outage), and routes calls for agents it
 * has no tunnel of to the replicas that do, through their private APIs.
 */
export function startKasReplicas(
  options: KasRedisOptions & { ownPrivateApiUrl: string },
  deps: {
    registry: TunnelRegistry;
    tracker: AgentTracker;
    logger: Logger;
    privateApiSecret: Uint8Array;
    maxMessageBytes: number;
    /** The per-token connection limit to hold across replicas; 0: none. */
    connectionsPerTokenPerMinute: number;
    onRouted?: RoutingAgentCallsOptions["onRouted"];
  },
): KasReplicas {
  const logger = deps.logger.child({ component: "replicas" });
  const ttlMs = options.registrationTtlMs ?? 300_000;
  const availability = new RedisAvailability(options.client, logger);
  const hashes = new ExpiringHashes(options.client, ttlMs, availability);
  const keys = redisKeys(options.keyPrefix ?? DEFAULT_REDIS_KEY_PREFIX);
  const tunnels = new RedisTunnelTracker(hashes, keys, options.ownPrivateApiUrl);
  const connections = new RedisAgentConnections(hashes, keys, deps.tracker);
  const peers = new PeerSessions({ jwtSecret: deps.privateApiSecret, ca: options.privateApiCa });
  tunnels.track(deps.registry);
  connections.track();
  const stopRebuilding = availability.onRecovered(() => void hashes.rewrite());
  const refreshTimer = setInterval(() => void hashes.refresh(), options.refreshIntervalMs ?? 240_000);
  const gcTimer = setInterval(() => {
    void hashes.gc().then((removed) => removed > 0 && logger.info({ removed }, "deleted expired entries from Redis"));
  }, options.gcIntervalMs ?? 600_000);
  refreshTimer.unref();
  gcTimer.unref();
  const agentCalls = new RoutingAgentCalls({
    registry: deps.registry,
    directory: tunnels,
    peers,
    logger,
    maxMessageBytes: deps.maxMessageBytes,
    onRouted: deps.onRouted,
  });
  const connectionLimiter =
    deps.connectionsPerTokenPerMinute > 0 ? new RedisConnectionLimiter(options.client, keys, deps.connectionsPerTokenPerMinute, availability) : undefined;
  let withdrawn: Promise<void> | undefined;
  return {
    agentCalls,
    connections,
    connectionLimiter,
    availability,
    keys,
    withdraw() {
      return (withdrawn ??= (async () => {
        tunnels.stop();
        connections.stop();
        clearInterval(refreshTimer);
        clearInterval(gcTimer);
        stopRebuilding();
        await hashes.clear();
      })());
    },
    close() {
      void this.withdraw();
      peers.close();
      availability.close();
    },
  };
}
