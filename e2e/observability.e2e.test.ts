import { rmSync } from "node:fs";
import { expect } from "chai";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { waitFor } from "@kasbridge/testing/wait";
import { createAgentWithToken, spawnKas, startAgentk, startKas, type Proc } from "./harness.test-support.js";

describe("e2e: agentk's observability listener", function () {
  this.timeout(120_000);
  const cleanups = new Cleanup();
  after(() => cleanups.run());

  it("readiness flips: ready once registered and configured, not ready when KAS is gone too long, ready again when it is back", async () => {
    const kas = await startKas();
    cleanups.add(() => rmSync(kas.dataDir, { recursive: true, force: true }));
    cleanups.add(() => kas.stop());
    const a = await createAgentWithToken(kas);
    const agentk = startAgentk(kas.addresses.agent, a.token, {}, ["--readiness-kas-loss-timeout-ms", "500"]);
    cleanups.add(() => agentk.cleanup());
    const url = (await agentk.waitFor(/"url":"(http:\/\/127\.0\.0\.1:\d+)"[^\n]*observability listening/, "the observability listener"))[1]!;
    const probe = async (path: string) => {
      const res = await fetch(`${url}${path}`);
      return { status: res.status, body: await res.text() };
    };
    await waitFor(async () => (await probe("/readiness")).status === 200, undefined, "ready");
    expect(await probe("/liveness")).to.deep.equal({ status: 200, body: "" });
    const metrics = await (await fetch(`${url}/metrics`)).text();
    expect(metrics).to.match(/^agentk_ready 1$/m);
    expect(metrics).to.match(/^agentk_configurations_applied_total 1$/m);
    expect(metrics).to.match(/^agentk_uncaught_errors_total\{kind="uncaughtException"\} 0$/m);

    // KAS stops: after --readiness-kas-loss-timeout-ms, not ready, with the reason.
    await kas.stop();
    await waitFor(async () => (await probe("/readiness")).status === 500, undefined, "not ready without KAS");
    expect((await probe("/readiness")).body).to.match(/^KAS unreachable for \d+ s: /);
    expect((await probe("/liveness")).status).to.equal(200);

    // KAS is back on the same address and data: ready again.
    const port = new URL(kas.addresses.agent.replace(/^grpc/, "http")).port;
    const again: Proc = spawnKas({ KAS_AGENT_ADDR: `127.0.0.1:${port}` }, kas.dataDir);
    cleanups.add(() => again.stop());
    await again.waitFor(/KAS_LISTENING/);
    await waitFor(async () => (await probe("/readiness")).status === 200, 30_000, "ready again");
  });

  it("two agentk with the default flags of the harness do not clash (each on its own free port)", async () => {
    const kas = await startKas();
    cleanups.add(() => kas.cleanup());
    const a = await createAgentWithToken(kas);
    const ports = await Promise.all(
      [0, 1].map(async () => {
        const agentk = startAgentk(kas.addresses.agent, a.token);
        cleanups.add(() => agentk.cleanup());
        return (await agentk.waitFor(/"port":(\d+)\}[^\n]*observability listening/, "the observability listener"))[1];
      }),
    );
    expect(ports[0]).to.not.equal(ports[1]);
  });
});
