import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { Redis } from "ioredis";
import { ExpiringValueSchema, ExpiringValueTimestampSchema } from "../gen/gitlab/agent/redistool/redistool_pb.js";
import type { RedisAvailability } from "./redis-availability.js";

/** One hash's fields this replica owns: field -> value (the payload of its ExpiringValue). */
interface OwnedHash {
  key: Buffer;
  fields: Map<string, Uint8Array>;
}

/**
 * Redis hashes whose fields expire one by one, as GitLab's KAS keeps them (redistool): each value
 * is an `ExpiringValue{expires_at (unix s), value}`, and the hash itself expires `ttlMs` after its
 * last write (PEXPIRE), so the entries of a replica that died go: readers skip fields past
 * `expires_at`, and the whole hash goes when no replica refreshes it any more.
 *
 * It remembers the fields this replica owns, to refresh them (`refresh`, every `refreshMs` of the
 * owner), to write them again after a Redis outage (`rewrite`), and to remove them at shutdown
 * (`clear`). Removals that failed (Redis down) are retried by `rewrite`.
 */
export class ExpiringHashes {
  private readonly owned = new Map<string, OwnedHash>();
  /** Removals that failed, by hash (field -> payload): retried when Redis is back. */
  private readonly pendingDeletes = new Map<string, OwnedHash>();

  constructor(
    private readonly redis: Redis,
    private readonly ttlMs: number,
    private readonly availability: RedisAvailability,
  ) {}

  /** Sets (and owns) a field. */
  async set(key: Buffer, field: string, value: Uint8Array = emptyValue): Promise<void> {
    const id = key.toString("latin1");
    let hash = this.owned.get(id);
    if (!hash) {
      hash = { key, fields: new Map() };
      this.owned.set(id, hash);
    }
    hash.fields.set(field, value);
    this.pendingDeletes.get(id)?.fields.delete(field);
    await this.write([{ key, fields: new Map([[field, value]]) }], "register");
  }

  /**
   * Removes a field (and stops owning it), unless another replica has written it since (its value
   * no longer ends with our payload: e.g. an agent process that moved keeps its connection id).
   */
  async unset(key: Buffer, field: string): Promise<void> {
    const payload = this.forget(key, field) ?? emptyValue;
    const removal = { key, fields: new Map([[field, payload]]) };
    if ((await this.remove(removal)) === undefined) {
      const id = key.toString("latin1");
      let pending = this.pendingDeletes.get(id);
      if (!pending) this.pendingDeletes.set(id, (pending = { key, fields: new Map() }));
      pending.fields.set(field, payload);
    }
  }

  /** Stops owning a field without removing it: it expires by itself. Returns its payload. */
  forget(key: Buffer, field: string): Uint8Array | undefined {
    const id = key.toString("latin1");
    const hash = this.owned.get(id);
    const payload = hash?.fields.get(field);
    if (!hash || payload === undefined) return undefined;
    hash.fields.delete(field);
    if (hash.fields.size === 0) this.owned.delete(id);
    return payload;
  }

  /** Whether this replica owns the field. */
  owns(key: Buffer, field: string): boolean {
    return this.owned.get(key.toString("latin1"))?.fields.has(field) ?? false;
  }

  /** Writes every owned field again with a new expiry (the periodic refresh). */
  async refresh(): Promise<void> {
    if (this.owned.size > 0) await this.write([...this.owned.values()], "refresh");
  }

  /** After an outage: writes every owned field again and retries the removals that failed. */
  async rewrite(): Promise<void> {
    const deletes = [...this.pendingDeletes.values()];
    this.pendingDeletes.clear();
    for (const removal of deletes) if (removal.fields.size > 0) await this.remove(removal);
    await this.refresh();
  }

  /** Removes every owned field (shutdown). */
  async clear(): Promise<void> {
    const hashes = [...this.owned.values()];
    this.owned.clear();
    await Promise.all(hashes.map((hash) => this.remove(hash)));
  }

  /** Deletes the fields whose value still ends with our payload; undefined when Redis failed. */
  private remove({ key, fields }: OwnedHash): Promise<unknown> {
    const args: Uint8Array[] = [];
    for (const [field, payload] of fields) args.push(Buffer.from(field), payload);
    return this.availability.run("unregister", () => this.redis.eval(deleteIfOursScript, 1, key, ...(args as Buffer[])));
  }

  /** Drops expired fields from the hashes this replica owns fields in (GitLab's GC). Returns how many. */
  async gc(): Promise<number> {
    let removed = 0;
    for (const { key } of [...this.owned.values()]) {
      const fields = await this.availability.run("gc", () => this.redis.hgetallBuffer(key));
      if (fields) removed += await this.removeExpired(key, fields);
    }
    return removed;
  }

  /**
   * The live fields of a hash (expired ones are skipped and removed): field -> payload. Throws
   * when Redis fails (after reporting it).
   */
  async read(key: Buffer): Promise<Map<string, Uint8Array>> {
    let raw: Record<string, Buffer>;
    try {
      raw = await this.redis.hgetallBuffer(key);
      this.availability.succeeded();
    } catch (error) {
      this.availability.failed("read", error);
      throw error;
    }
    const nowS = Math.floor(Date.now() / 1000);
    const live = new Map<string, Uint8Array>();
    let expired = false;
    for (const [field, bytes] of Object.entries(raw)) {
      const value = decodeExpiring(bytes);
      if (value && value.expiresAt >= nowS) live.set(field, value.value);
      else expired = true;
    }
    if (expired) void this.removeExpired(key, raw);
    return live;
  }

  private async write(hashes: OwnedHash[], operation: string): Promise<void> {
    const expiresAt = BigInt(Math.floor((Date.now() + this.ttlMs) / 1000));
    const multi = this.redis.multi();
    for (const { key, fields } of hashes) {
      const args: Buffer[] = [];
      for (const [field, value] of fields) {
        args.push(Buffer.from(field), Buffer.from(toBinary(ExpiringValueSchema, create(ExpiringValueSchema, { expiresAt, value }))));
      }
      if (args.length === 0) continue;
      multi.hset(key, ...args);
      multi.pexpire(key, this.ttlMs);
    }
    await this.availability.run(operation, () => multi.exec());
  }

  /**
   * Deletes the fields of `raw` that have expired, each only if it still holds the value read (a
   * replica may have just written it again): one compare-and-delete script, atomic in Redis.
   */
  private async removeExpired(key: Buffer, raw: Record<string, Buffer>): Promise<number> {
    const nowS = BigInt(Math.floor(Date.now() / 1000));
    const args: Buffer[] = [];
    for (const [field, bytes] of Object.entries(raw)) {
      const ts = decodeTimestamp(bytes);
      if (ts === undefined || ts < nowS) args.push(Buffer.from(field), bytes);
    }
    if (args.length === 0) return 0;
    const removed = await this.availability.run("gc", () => this.redis.eval(deleteIfUnchangedScript, 1, key, ...args));
    return Number(removed ?? 0);
  }
}

/**
 * HDEL each field (ARGV odd) whose value ends with the payload given (ARGV even; an ExpiringValue
 * encodes its payload last, so this holds for the value this replica wrote, whatever its expiry).
 */
const deleteIfOursScript = `
local n = 0
for i = 1, #ARGV, 2 do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  local p = ARGV[i + 1]
  if v and (#p == 0 or string.sub(v, -#p) == p) then
    n = n + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return n`;

/** HDEL each field (ARGV odd) whose value still equals the one given (ARGV even). */
const deleteIfUnchangedScript = `
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    n = n + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return n`;

const emptyValue = new Uint8Array(0);

function decodeExpiring(bytes: Uint8Array): { expiresAt: number; value: Uint8Array } | undefined {
  try {
    const v = fromBinary(ExpiringValueSchema, bytes);
    return { expiresAt: Number(v.expiresAt), value: v.value };
  } catch {
    return undefined;
  }
}

function decodeTimestamp(bytes: Uint8Array): bigint | undefined {
  try {
    return fromBinary(ExpiringValueTimestampSchema, bytes, { readUnknownFields: false }).expiresAt;
  } catch {
    return undefined;
  }
}
