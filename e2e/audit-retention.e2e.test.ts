import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import knexFactory, { type Knex } from "knex";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { adminToken, api, createAgentWithToken, startKas } from "./harness.test-support.js";

const DAY_MS = 24 * 60 * 60 * 1000;

describe("e2e: the audit trail's retention", function () {
  this.timeout(120_000);
  const cleanups = new Cleanup();
  after(() => cleanups.run());

  /** The kas's own SQLite file, opened beside it (as an operator's sqlite3 shell would). */
  function openDb(dataDir: string): Knex {
    const db = knexFactory({ client: "sqlite3", connection: { filename: join(dataDir, "kas.sqlite3") }, useNullAsDefault: true, pool: { min: 1, max: 1 } });
    cleanups.add(() => db.destroy());
    return db;
  }
  const backdate = (db: Knex, id: number, days: number) =>
    db("audit_events").where({ id }).update({ created_at: new Date(Date.now() - days * DAY_MS).toISOString() });

  it("keeps entries KAS_AUDIT_RETENTION_DAYS, prunes older ones at start, and never serves an expired one", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "kas-e2e-retention-"));
    cleanups.add(() => rmSync(dataDir, { recursive: true, force: true }));

    // Some agent activity on a first run: token created (x2), token revoked.
    const first = await startKas({}, dataDir, { removeDataDir: false });
    cleanups.add(() => first.stop());
    const a = await createAgentWithToken(first);
    const second = await api(first, "POST", `/projects/${a.projectId}/cluster_agents/${a.agentId}/tokens`, { name: "t2" });
    expect((await api(first, "DELETE", `/projects/${a.projectId}/cluster_agents/${a.agentId}/tokens/${second.json.id}`)).status).to.equal(204);
    const before = (await api(first, "GET", "/kubernetes_audit_events?per_page=100")).json as Array<{ id: number; kind: string }>;
    expect(before.map((e) => e.kind)).to.deep.equal(["token_revoked", "token_created", "token_created"]);
    await first.stop();

    // Offline, the oldest entry is made 40 days old, the next one 20 days.
    const [revoked, created2, created1] = before.map((e) => e.id);
    let db = openDb(dataDir);
    await backdate(db, created1!, 40);
    await backdate(db, created2!, 20);
    await db.destroy();

    // With a 30-day retention, the restarted kas deletes the 40-day-old entry at start.
    const again = await startKas({ KAS_AUDIT_RETENTION_DAYS: "30" }, dataDir, { removeDataDir: false });
    cleanups.add(() => again.stop());
    await again.waitFor(/"deleted":1[^\n]*pruned audit entries past their retention/, "the prune at start");
    db = openDb(dataDir);
    const ids = async () => ((await db("audit_events").orderBy("id", "desc").select("id")) as Array<{ id: number }>).map((r) => r.id);
    expect(await ids()).to.deep.equal([revoked, created2]);
    const listed = async () => ((await api(again, "GET", "/kubernetes_audit_events?per_page=100")).json as Array<{ id: number }>).map((e) => e.id);
    expect(await listed()).to.deep.equal([revoked, created2]);

    // An entry that expires while kas runs is no longer served (list, JSON lines), before any prune.
    await backdate(db, created2!, 31);
    expect(await listed()).to.deep.equal([revoked]);
    const stream = await fetch(`${again.addresses.platform}/api/v4/kubernetes_audit_events/stream`, { headers: { "PRIVATE-TOKEN": adminToken } });
    const lines = (await stream.text()).trim().split("\n").map((l) => (JSON.parse(l) as { id: number }).id);
    expect(lines).to.deep.equal([revoked]);
    expect(await ids()).to.deep.equal([revoked, created2]);
  });
});
