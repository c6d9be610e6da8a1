import { spawn } from "node:child_process";
import { EventEmitter } from "node:events";
import { fileURLToPath } from "node:url";
import { expect } from "chai";
import { Registry } from "prom-client";
import { HUNG_MS, within } from "@kasbridge/testing/wait";
import { installProcessSafetyNet } from "./process-safety-net.js";

const child = fileURLToPath(new URL("./process-safety-net-child.test-support.ts", import.meta.url));

/** Runs the child to its end: its exit code and everything it printed. */
async function run(args: string[]): Promise<{ code: number | null; output: string }> {
  const proc = spawn(process.execPath, ["--import", "tsx", child, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  proc.stdout.on("data", (d: Buffer) => (output += d.toString()));
  proc.stderr.on("data", (d: Buffer) => (output += d.toString()));
  const code = await within(HUNG_MS * 3, new Promise<number | null>((resolve) => proc.once("exit", resolve)), "the child to exit");
  return { code, output };
}

describe("process safety net", function () {
  this.timeout(HUNG_MS * 4);

  it("keeps a real process running through an uncaught exception and an unhandled rejection, each logged and counted", async () => {
    const { code, output } = await run([]);
    expect(output).to.include("ALIVE");
    expect(code).to.equal(0);
    expect(output).to.match(/child_uncaught_errors_total\{kind="uncaughtException"\} 1/);
    expect(output).to.match(/child_uncaught_errors_total\{kind="unhandledRejection"\} 1/);
    const logged = output.split("\n").filter((l) => l.startsWith("{")).map((l) => JSON.parse(l) as { level: number; kind: string; err: { message: string } });
    expect(logged.map((l) => [l.level, l.kind, l.err.message])).to.deep.equal([
      [50, "uncaughtException", "thrown from a timer"],
      [50, "unhandledRejection", "rejected, never handled"],
    ]);
  });

  it("is what keeps it running: without it the same process dies", async () => {
    const { code, output } = await run(["--bare"]);
    expect(output).to.not.include("ALIVE");
    expect(code).to.not.equal(0);
  });

  it("shows the counter at 0 before anything happened, and can be removed", async () => {
    const target = new EventEmitter();
    const metrics = new Registry();
    const errors: unknown[] = [];
    const { remove } = installProcessSafetyNet({ logger: { error: (o) => errors.push(o) }, metrics, metricPrefix: "t", target: target as never });
    expect(await metrics.getSingleMetricAsString("t_uncaught_errors_total")).to.match(/kind="uncaughtException"\} 0/);
    target.emit("uncaughtException", new Error("x"));
    expect(errors).to.have.length(1);
    remove();
    expect(target.listenerCount("uncaughtException") + target.listenerCount("unhandledRejection")).to.equal(0);
  });
});
