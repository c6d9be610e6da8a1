import { Redis, type RedisOptions } from "ioredis";

/**
 * How KAS reaches Redis: one set of settings for everything it keeps there (the tunnel and agent
 * registries, the connection rate limit, the events between replicas).
 */
export interface RedisConnectionOptions {
  /** `redis://[user[:password]@]host[:port][/db]`, or `rediss://` for TLS. */
  url: string;
  /** Password (e.g. read from a file); replaces one in the URL. Never logged. */
  password?: string;
  /** TLS settings; given, TLS is on even with a `redis://` URL. */
  tls?: {
    /** PEM CA bundle to trust instead of the system's. */
    ca?: string | Buffer;
    /** PEM client certificate and key, for servers that require one. */
    cert?: string | Buffer;
    key?: string | Buffer;
    /** Server name to verify. Default: the URL's host. */
    servername?: string;
  };
  /** How long establishing a connection may take. Default 5 000 ms (GitLab's dial timeout). */
  connectTimeoutMs?: number;
  /** A command unanswered for this long fails. Default 3 000 ms (GitLab's write timeout). */
  commandTimeoutMs?: number;
  /** Longest pause between reconnection attempts. Default 2 000 ms. */
  maxReconnectDelayMs?: number;
  /** Name of the connection in Redis' CLIENT LIST. */
  connectionName?: string;
}

/**
 * A connected ioredis client for KAS. Commands fail at once while the connection is down (no
 * offline queue): KAS then serves what it holds locally instead of waiting for Redis; ioredis
 * reconnects by itself (100 ms, doubling, at most `maxReconnectDelayMs`) and re-subscribes a
 * subscriber connection's channels. Rejects when the first connection fails; the client is closed
 * then.
 */
export async function connectRedis(options: RedisConnectionOptions): Promise<Redis> {
  const redis = createRedisClient(options);
  // Errors are reported through the commands and RedisAvailability; an "error" without a
  // listener would be an uncaught exception.
  const firstError = (error: Error) => void error;
  redis.on("error", firstError);
  try {
    await redis.connect();
    return redis;
  } catch (error) {
    redis.disconnect();
    throw new Error(`cannot connect to Redis at ${redactedUrl(options.url)}: ${(error as Error).message}`, { cause: error });
  }
}

/**
 * The client {@link connectRedis} connects, not yet connected (`lazyConnect`): `connect()` it. It
 * reconnects by itself, also when the first attempt fails. A `subscriber` connection (pub/sub)
 * queues its SUBSCRIBE until connected.
 */
export function createRedisClient(options: RedisConnectionOptions, role: "commands" | "subscriber" = "commands"): Redis {
  const maxDelay = options.maxReconnectDelayMs ?? 2_000;
  const settings: RedisOptions = {
    lazyConnect: true,
    enableOfflineQueue: role === "subscriber",
    maxRetriesPerRequest: 0,
    connectTimeout: options.connectTimeoutMs ?? 5_000,
    commandTimeout: options.commandTimeoutMs ?? 3_000,
    retryStrategy: (attempt) => Math.min(100 * 2 ** Math.min(attempt - 1, 10), maxDelay),
    connectionName: options.connectionName,
  };
  if (options.password !== undefined) settings.password = options.password;
  if (options.tls || options.url.startsWith("rediss:")) {
    settings.tls = { ca: options.tls?.ca, cert: options.tls?.cert, key: options.tls?.key, servername: options.tls?.servername };
  }
  return new Redis(options.url, settings);
}

/** The URL without its password, for messages. */
export function redactedUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.href;
  } catch {
    return "(unparseable URL)";
  }
}
