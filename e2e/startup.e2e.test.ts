// `kas` refusing to start: what an operator sees (one clear line, no stack trace for a
// configuration mistake) and the exit code scripts and supervisors act on.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { Cleanup } from "@kasbridge/testing/cleanup";
import { closeServer, listen } from "@kasbridge/testing/servers";
import { HUNG_MS, within } from "@kasbridge/testing/wait";
import { spawnKas } from "./harness.test-support.js";

describe("e2e: kas start-up errors", function () {
  this.timeout(60_000);
  const cleanups = new Cleanup();
  afterEach(() => cleanups.run());

  /** Runs kas until it exits by itself: its exit code and output. */
  async function run(env: Record<string, string>, args: string[] = []): Promise<{ code: number | null; output: string }> {
    const dir = mkdtempSync(join(tmpdir(), "kas-startup-"));
    cleanups.add(() => rmSync(dir, { recursive: true, force: true }));
    const kas = spawnKas(env, dir, args);
    cleanups.add(() => kas.stop("SIGKILL"));
    const code = await within(HUNG_MS, kas.exited, "kas to exit by itself");
    return { code, output: kas.output };
  }

  function file(content: string): string {
    const dir = mkdtempSync(join(tmpdir(), "kas-config-"));
    cleanups.add(() => rmSync(dir, { recursive: true, force: true }));
    const path = join(dir, "kas.yaml");
    writeFileSync(path, content);
    return path;
  }

  /** A configuration mistake: exit code 2 and one line naming it, nothing else. */
  function expectConfigError(result: { code: number | null; output: string }, message: string): void {
    expect(result.code, result.output).to.equal(2);
    expect(result.output).to.equal(`kas: configuration error: ${message}\n`);
  }

  it("refuses a bad setting from the environment, naming the variable (exit 2)", async () => {
    expectConfigError(await run({ KAS_DATABASE_URL: "mysql://db/kas" }), "KAS_DATABASE_URL must be a postgres:// URL (unset for SQLite)");
  });

  it("refuses an unknown key and unreadable YAML in the config file, naming the file (exit 2)", async () => {
    const unknown = file("listen:\n  agent: 127.0.0.1:0\nbogus_key: 1\n");
    expectConfigError(await run({}, ["--config", unknown]), `unknown key bogus_key in ${unknown}`);
    const broken = file("listen:\n  agent: [1\n");
    const result = await run({}, ["--config", broken]);
    expect(result.code, result.output).to.equal(2);
    expect(result.output).to.match(new RegExp(`^kas: configuration error: cannot read config file ${broken}: .*line 3`, "s"));
    const missing = join(tmpdir(), "kas-no-such-config.yaml");
    expect((await run({}, ["--config", missing])).output).to.match(new RegExp(`^kas: configuration error: cannot read config file ${missing}: ENOENT`));
  });

  it("refuses an unknown command-line option (exit 2)", async () => {
    const result = await run({}, ["--bogus"]);
    expect(result.code).to.equal(2);
    expect(result.output).to.equal("Unknown option '--bogus'\n");
  });

  it("exits 1 naming the address when a port is in use, and leaves nothing listening", async () => {
    const taken = createServer();
    const port = await listen(taken);
    cleanups.add(() => closeServer(taken));
    const result = await run({ KAS_AGENT_ADDR: `127.0.0.1:${port}` });
    expect(result.code, result.output).to.equal(1);
    const fatal = result.output
      .split("\n")
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as { level: number; msg: string; err?: { message: string } })
      .find((l) => l.level === 60);
    expect(fatal?.msg).to.equal("kas failed to start");
    expect(fatal?.err?.message).to.equal(`listen EADDRINUSE: address already in use 127.0.0.1:${port}`);
    expect(result.output).to.not.include("KAS_LISTENING");
  });

  it("exits 1 naming the file when a TLS certificate cannot be read", async () => {
    const result = await run({ KAS_AGENT_TLS_CERT_FILE: "/nonexistent/agent.crt", KAS_AGENT_TLS_KEY_FILE: "/nonexistent/agent.key" });
    expect(result.code, result.output).to.equal(1);
    expect(result.output).to.match(/"msg":"kas failed to start"/);
    expect(result.output).to.include("no such file or directory, open '/nonexistent/agent.crt'");
  });
});
