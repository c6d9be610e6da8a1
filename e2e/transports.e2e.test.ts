import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { Code } from "@connectrpc/connect";
import pg from "pg";
import { selfSignedCertificateFiles } from "@kasbridge/testing/tls";
import { TEST_POSTGRES_URL } from "../platform/src/testing/fixtures.test-support.js";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { rejection } from "@kasbridge/testing/wait";
import { api, createAgentWithToken, echoClient, startAgentk, startKas } from "./harness.test-support.js";

describe("e2e: agent transports, remote platform and PostgreSQL", function () {
  this.timeout(120_000);
  const cleanups = new Cleanup();
  afterEach(() => cleanups.run());

  async function roundTrip(kasAddressFor: (agentUrl: string) => string, kasEnv: Record<string, string> = {}, agentArgs: string[] = []) {
    const kas = await startKas(kasEnv);
    cleanups.add(() => kas.cleanup());
    const a = await createAgentWithToken(kas);
    const agentk = startAgentk(kasAddressFor(kas.addresses.agent), a.token, {}, agentArgs);
    cleanups.add(() => agentk.cleanup());
    const echo = echoClient(kas, a.agentId);
    cleanups.add(() => echo.close());
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
    cleanups.add(() => rmSync(dir, { recursive: true, force: true }));
    const { certFile: cert, keyFile: key } = selfSignedCertificateFiles(dir, "tls");
    const env = { KAS_AGENT_TLS_CERT_FILE: cert, KAS_AGENT_TLS_KEY_FILE: key };
    const { kas } = await roundTrip((url) => url, env, ["--ca-cert-file", cert]);
    expect(kas.addresses.agent).to.match(/^grpcs:/);
    const b = await createAgentWithToken(kas);
    const agentk = startAgentk(kas.addresses.agent.replace(/^grpcs:/, "wss:"), b.token, {}, ["--ca-cert-file", cert]);
    cleanups.add(() => agentk.cleanup());
    const echo = echoClient(kas, b.agentId);
    cleanups.add(() => echo.close());
    const res = await echo.client.echo({ payload: new Uint8Array([5]) }, { timeoutMs: 15_000 });
    expect(res.payload[0]).to.equal(5);
  });

  it("agentk refuses a server certificate it does not trust", async () => {
    const dir = mkdtempSync(join(tmpdir(), "kas-tls-"));
    cleanups.add(() => rmSync(dir, { recursive: true, force: true }));
    const { certFile: cert, keyFile: key } = selfSignedCertificateFiles(dir, "tls");
    const kas = await startKas({ KAS_AGENT_TLS_CERT_FILE: cert, KAS_AGENT_TLS_KEY_FILE: key });
    cleanups.add(() => kas.cleanup());
    const a = await createAgentWithToken(kas);
    const agentk = startAgentk(kas.addresses.agent, a.token);
    cleanups.add(() => agentk.cleanup());
    await agentk.waitFor(/reverse tunnel to KAS failed/);
    expect(agentk.output).to.match(/certificate/i);
  });

  it("KAS against a remote platform over the internal HTTP API (KAS_PLATFORM_URL)", async () => {
    const platformKas = await startKas();
    cleanups.add(() => platformKas.cleanup());
    const kas = await startKas({
      KAS_PLATFORM_ENABLED: "false",
      KAS_PLATFORM_URL: platformKas.addresses.platform!,
      KAS_API_SECRET_FILE: join(platformKas.dataDir, ".gitlab_kas_secret"),
    });
    cleanups.add(() => kas.cleanup());
    expect(kas.addresses.platform).to.equal(undefined);
    const a = await createAgentWithToken(platformKas);
    const agentk = startAgentk(kas.addresses.agent, a.token);
    cleanups.add(() => agentk.cleanup());
    const echo = echoClient(kas, a.agentId);
    cleanups.add(() => echo.close());
    const res = await echo.client.echo({ payload: new Uint8Array([1]) }, { timeoutMs: 15_000 });
    expect(res.payload[0]).to.equal(1);
    // Revocation travels through the platform's feed to the remote KAS, which closes the tunnels.
    const revoked = await api(platformKas, "DELETE", `/projects/${a.projectId}/cluster_agents/${a.agentId}/tokens/${a.tokenId}`);
    expect(revoked.status).to.equal(204);
    await kas.waitFor(/agent token revoked: closing its streams/, "the remote KAS to close the revoked token's streams");
    const err = await rejection(echo.client.echo({}, { timeoutMs: 2000 }));
    expect(err.code).to.equal(Code.Unavailable);
  });

  it("kas on PostgreSQL (KAS_DATABASE_URL)", async () => {
    const admin = new pg.Client({ connectionString: TEST_POSTGRES_URL });
    await admin.connect().catch((error: Error) => {
      throw new Error(
        `PostgreSQL is required at 127.0.0.1:5432 (${error.message}); start it with: pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`,
      );
    });
    const db = `kas_e2e_${process.pid}_${Date.now()}`;
    await admin.query(`CREATE DATABASE ${db}`);
    cleanups.add(async () => {
      await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`);
      await admin.end();
    });
    const url = new URL(TEST_POSTGRES_URL);
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
