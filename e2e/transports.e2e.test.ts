import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { Code, ConnectError } from "@connectrpc/connect";
import pg from "pg";
import { api, createAgentWithToken, echoClient, selfSignedCert, startAgentk, startKas, waitUntil } from "./harness.test-support.js";

describe("e2e: agent transports, remote platform and PostgreSQL", function () {
  this.timeout(120_000);
  const cleanups: Array<() => Promise<unknown> | unknown> = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  async function roundTrip(kasAddressFor: (agentUrl: string) => string, kasEnv: Record<string, string> = {}, agentArgs: string[] = []) {
    const kas = await startKas(kasEnv);
    cleanups.push(() => kas.cleanup());
    const a = await createAgentWithToken(kas);
    const agentk = startAgentk(kasAddressFor(kas.addresses.agent), a.token, {}, agentArgs);
    cleanups.push(() => agentk.cleanup());
    const echo = echoClient(kas, a.agentId);
    cleanups.push(() => echo.close());
    const res = await echo.client.echo({ payload: new TextEncoder().encode("over the wire") }, { timeoutMs: 15_000 });
    expect(new TextDecoder().decode(res.payload)).to.equal("over the wire");
    let bytes = 0;
    for await (const m of echo.client.serverStream({ count: 160, size: 65_536 })) bytes += m.payload.byteLength;
    expect(bytes).to.equal(160 * 65_536);
    return { kas, agentk };
  }

  it("agentk over ws:// (GitLab's WebSocket transport)", async () => {
    await roundTrip((url) => url.replace(/^grpc:/, "ws:"));
  });

  it("agentk over grpcs:// and wss:// with a configured certificate", async () => {
    const dir = mkdtempSync(join(tmpdir(), "kas-tls-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const { certFile: cert, keyFile: key } = selfSignedCert(dir, "tls");
    const env = { KAS_AGENT_TLS_CERT_FILE: cert, KAS_AGENT_TLS_KEY_FILE: key };
    const { kas } = await roundTrip((url) => url, env, ["--ca-cert-file", cert]);
    expect(kas.addresses.agent).to.match(/^grpcs:/);
    const b = await createAgentWithToken(kas);
    const agentk = startAgentk(kas.addresses.agent.replace(/^grpcs:/, "wss:"), b.token, {}, ["--ca-cert-file", cert]);
    cleanups.push(() => agentk.cleanup());
    const echo = echoClient(kas, b.agentId);
    cleanups.push(() => echo.close());
    const res = await echo.client.echo({ payload: new Uint8Array([5]) }, { timeoutMs: 15_000 });
    expect(res.payload[0]).to.equal(5);
  });

  it("agentk refuses a server certificate it does not trust", async () => {
    const dir = mkdtempSync(join(tmpdir(), "kas-tls-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    const { certFile: cert, keyFile: key } = selfSignedCert(dir, "tls");
    const kas = await startKas({ KAS_AGENT_TLS_CERT_FILE: cert, KAS_AGENT_TLS_KEY_FILE: key });
    cleanups.push(() => kas.cleanup());
    const a = await createAgentWithToken(kas);
    const agentk = startAgentk(kas.addresses.agent, a.token);
    cleanups.push(() => agentk.cleanup());
    await agentk.waitFor(/reverse tunnel to KAS failed/);
    expect(agentk.output).to.match(/certificate/i);
  });

  it("KAS against a remote platform over the internal HTTP API (KAS_PLATFORM_URL)", async () => {
    const platformKas = await startKas();
    cleanups.push(() => platformKas.cleanup());
    const kas = await startKas({
      KAS_PLATFORM_ENABLED: "false",
      KAS_PLATFORM_URL: platformKas.addresses.platform!,
      KAS_API_SECRET_FILE: join(platformKas.dataDir, ".gitlab_kas_secret"),
    });
    cleanups.push(() => kas.cleanup());
    expect(kas.addresses.platform).to.equal(undefined);
    const a = await createAgentWithToken(platformKas);
    const agentk = startAgentk(kas.addresses.agent, a.token);
    cleanups.push(() => agentk.cleanup());
    const echo = echoClient(kas, a.agentId);
    cleanups.push(() => echo.close());
    const res = await echo.client.echo({ payload: new Uint8Array([1]) }, { timeoutMs: 15_000 });
    expect(res.payload[0]).to.equal(1);
    // Revocation travels through the platform's feed to the remote KAS.
    const revoked = await api(platformKas, "DELETE", `/projects/${a.projectId}/cluster_agents/${a.agentId}/tokens/${a.tokenId}`);
    expect(revoked.status).to.equal(204);
    const took = await waitUntil(
      async () => {
        const err = await echo.client.echo({}, { timeoutMs: 200 }).then(() => undefined, (e: unknown) => ConnectError.from(e));
        return err?.code === Code.Unavailable;
      },
      3000,
      "tunnels of the revoked token to close",
    );
    expect(took).to.be.lessThan(1500);
  });

  it("kas on PostgreSQL (KAS_DATABASE_URL)", async () => {
    const admin = new pg.Client({ connectionString: process.env.KAS_TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/test" });
    await admin.connect().catch((error: Error) => {
      throw new Error(
        `PostgreSQL is required at 127.0.0.1:5432 (${error.message}); start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`,
      );
    });
    const db = `kas_e2e_${process.pid}_${Date.now()}`;
    await admin.query(`CREATE DATABASE ${db}`);
    cleanups.push(async () => {
      await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
      await admin.end();
    });
    const url = new URL(process.env.KAS_TEST_POSTGRES_URL ?? "postgres://postgres@127.0.0.1:5432/test");
    url.pathname = `/${db}`;
    const { kas } = await roundTrip((u) => u, { KAS_DATABASE_URL: url.toString() });
    expect(kas.output).to.match(/"database":"postgres"/);
    const check = new pg.Client({ connectionString: url.toString() });
    await check.connect();
    try {
      const { rows } = await check.query("SELECT count(*)::int AS n FROM cluster_agents");
      expect(rows[0].n).to.equal(1);
    } finally {
      await check.end();
    }
  });
});
