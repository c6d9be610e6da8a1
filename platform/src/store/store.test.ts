import { afterEach, beforeEach, describe, it } from "mocha";
import { expect } from "chai";
import { mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Knex } from "knex";
import { createPlatformServices } from "../services/platform-services.js";
import { migrationSource } from "./migrations.js";
import { openStore } from "./store.js";
import { describeEachStore } from "../testing/fixtures.test-support.js";

describe("platform/store (sqlite specifics)", () => {
  let dataDir: string;
  beforeEach(async () => {
    dataDir = await mkdtemp(join(tmpdir(), "kasbridge-store-"));
  });
  afterEach(async () => {
    await rm(dataDir, { recursive: true, force: true });
  });

  it("creates <dataDir>/kas.sqlite3 in WAL mode with foreign keys on, and reopens it", async () => {
    const nested = join(dataDir, "nested", "data");
    const store = await openStore({ dataDir: nested });
    try {
      expect(store.dialect).to.equal("sqlite");
      expect((await stat(join(nested, "kas.sqlite3"))).isFile()).to.equal(true);
      const [mode] = (await store.knex.raw("PRAGMA journal_mode")) as { journal_mode: string }[];
      expect(mode!.journal_mode).to.equal("wal");
      const [fk] = (await store.knex.raw("PRAGMA foreign_keys")) as { foreign_keys: number }[];
      expect(fk!.foreign_keys).to.equal(1);
      await store.knex("users").insert({ username: "keep", name: "Keep", created_at: new Date().toISOString() });
    } finally {
      await store.close();
      await store.close(); // idempotent
    }
    const again = await openStore({ dataDir: nested });
    try {
      expect(await again.knex("users").pluck("username")).to.deep.equal(["keep"]);
      const migrations = await again.knex("kasbridge_migrations").pluck("name");
      expect(migrations.slice(0, 2)).to.deep.equal(["0001_initial", "0002_agent_configurations"]);
    } finally {
      await again.close();
    }
  });

  it("refuses a non-PostgreSQL URL without echoing it, and a bad schema name", async () => {
    const err = await openStore({ databaseUrl: "mysql://user:secret@host/db", dataDir }).catch((e: unknown) => e as Error);
    expect((err as Error).message).to.contain("postgres://").and.not.contain("secret");
    const err2 = await openStore({ databaseUrl: "postgres://x@127.0.0.1/test", dataDir, schema: "Bad-Name" }).catch(
      (e: unknown) => e as Error,
    );
    expect((err2 as Error).message).to.contain("schema");
  });

  it("reports an unreachable PostgreSQL as an error and leaks no pool", async () => {
    const err = await openStore({ databaseUrl: "postgres://postgres@127.0.0.1:1/none", dataDir }).catch((e: unknown) => e as Error);
    expect((err as Error).message).to.match(/cannot open postgres store/);
  });
});

/** Rolls migrations back until `name` is the last one applied (whatever later ones exist). */
async function rollBackTo(knex: Knex, name: string): Promise<void> {
  for (;;) {
    const [done] = (await knex.migrate.list({ migrationSource })) as [Array<string | { name: string }>, unknown];
    const last = done.at(-1);
    if (last === undefined || (typeof last === "string" ? last : last.name) === name) return;
    await knex.migrate.down({ migrationSource });
  }
}

describeEachStore("platform/store", (getStore) => {
  it("enforces foreign keys and unique constraints", async () => {
    const knex = getStore().knex;
    const now = new Date().toISOString();
    let err = await knex("projects")
      .insert({ name: "p", path: "p", namespace_id: 999, created_at: now })
      .catch((e: unknown) => e as Error);
    expect(err).to.be.instanceOf(Error);
    await knex("users").insert({ username: "u", name: "U", created_at: now });
    err = await knex("users").insert({ username: "u", name: "U2", created_at: now }).catch((e: unknown) => e as Error);
    expect(err).to.be.instanceOf(Error);
  });

  it("0004 protects the default branch of every project that existed before it", async () => {
    const knex = getStore().knex;
    const now = new Date().toISOString();
    // A project created by an earlier version: no protection yet.
    await rollBackTo(knex, "0003_ci_jobs");
    expect(await knex.schema.hasTable("protected_branches")).to.equal(false);
    const [{ id: nsId }] = (await knex("namespaces")
      .insert({ name: "g", path: "g", kind: "group", full_path: "g", full_name: "g", created_at: now })
      .returning("id")) as { id: number }[];
    const [{ id: projectId }] = (await knex("projects")
      .insert({ name: "p", path: "p", namespace_id: nsId, default_branch: "trunk", created_at: now })
      .returning("id")) as { id: number }[];
    await knex.migrate.latest({ migrationSource });
    const rows = (await knex("protected_branches").select("project_id", "name", "push_access_level", "merge_access_level", "allow_force_push")) as {
      allow_force_push: unknown;
    }[];
    expect(rows.map((r) => ({ ...r, allow_force_push: Boolean(r.allow_force_push) }))).to.deep.equal([
      { project_id: projectId, name: "trunk", push_access_level: 40, merge_access_level: 40, allow_force_push: false },
    ]);
  });

  it("moves agent token revocations into the feed of every kind with their ids (0005), so a poller's cursor stays good", async () => {
    const knex = getStore().knex;
    await rollBackTo(knex, "0004_protected_branches"); // back to agent_token_revocations
    try {
      const at = new Date().toISOString();
      await knex("agent_token_revocations").insert([
        { id: 7, agent_id: 1, token_id: 11, revoked_at: at },
        { id: 9, agent_id: 2, token_id: 12, revoked_at: at },
      ]);
    } finally {
      await knex.migrate.latest({ migrationSource });
    }
    expect(await knex.schema.hasTable("agent_token_revocations")).to.equal(false);
    const services = createPlatformServices({ store: getStore() });
    expect((await services.revocations.feed(6)).revocations).to.deep.equal([
      { kind: "agent_token", agentId: 1, tokenId: 11 },
      { kind: "agent_token", agentId: 2, tokenId: 12 },
    ]);
    // The next entry follows the moved ones.
    const user = await services.users.create({ username: "someone", name: "Someone" });
    await services.users.block(user.id);
    expect(await services.revocations.feed(9)).to.deep.equal({ revocations: [{ kind: "user", userId: user.id }], cursor: 10 });
  });

  it("round-trips timestamps as instants", async () => {
    const knex = getStore().knex;
    const at = new Date("2024-05-06T07:08:09.123Z");
    await knex("users").insert({ username: "t", name: "T", created_at: at.toISOString() });
    const row = (await knex("users").first("created_at")) as { created_at: unknown };
    expect(new Date(row.created_at as string).getTime()).to.equal(at.getTime());
  });
});
