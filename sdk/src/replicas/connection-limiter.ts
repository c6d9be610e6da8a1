import type { Redis } from "ioredis";
import { agentTokenKey, InMemoryConnectionLimiter, type AgentConnectionLimiter } from "../kas/connection-limiter.js";
import type { RedisAvailability } from "../redis/redis-availability.js";
import type { redisKeys } from "../redis/redis-keys.js";

/**
 * The per-token connection limit across replicas, in Redis as GitLab's KAS keeps it: one counter
 * per token and minute of the hour (`<prefix>:agent_limit:<token key>:<minute byte>`), read with
 * GET, then INCR and EXPIRE 59 s in one transaction. While Redis is down each replica counts on
 * its own (GitLab refuses every call then; kasbridge keeps serving the agents).
 */
export class RedisConnectionLimiter implements AgentConnectionLimiter {
  private readonly fallback: InMemoryConnectionLimiter;

  constructor(
    private readonly redis: Redis,
    private readonly keys: ReturnType<typeof redisKeys>,
    private readonly limitPerMinute: number,
    private readonly availability: RedisAvailability,
  ) {
    this.fallback = new InMemoryConnectionLimiter(limitPerMinute);
  }

  async allow(token: string): Promise<boolean> {
    const tokenKey = agentTokenKey(token);
    const key = this.keys.agentLimit(tokenKey, new Date().getUTCMinutes());
    try {
      const count = Number((await this.redis.get(key)) ?? 0);
      if (count >= this.limitPerMinute) {
        this.availability.succeeded();
        return false;
      }
      await this.redis.multi().incr(key).expire(key, 59).exec();
      this.availability.succeeded();
      return true;
    } catch (error) {
      this.availability.failed("connection limit", error);
      return this.fallback.count(tokenKey.toString("base64"));
    }
  }
}
