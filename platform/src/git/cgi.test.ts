import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer, request, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { expect } from "chai";
import { afterEach, beforeEach, describe, it } from "mocha";
import pino from "pino";
import { listen } from "@kasbridge/testing/servers";
import { waitFor } from "@kasbridge/testing/wait";
import { runCgi, type CgiResult, type RunCgiOptions } from "./cgi.js";

describe("runCgi", () => {
  let dir: string;
  let server: Server | undefined;
  let results: CgiResult[];

  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "kasbridge-cgi-"));
    results = [];
  });
  afterEach(async () => {
    server?.closeAllConnections();
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    server = undefined;
    await rm(dir, { recursive: true, force: true });
  });

  /** Serves every request with `sh -c script`; returns the base URL. */
  async function serve(script: string, options: Partial<RunCgiOptions> = {}): Promise<string> {
    server = createServer((req, res) => {
      runCgi({ command: "/bin/sh", args: ["-c", script], env: { PATH: process.env.PATH ?? "/bin", DIR: dir }, req, res, logger: pino({ level: "silent" }), ...options })
        .then((result) => {
          results.push(result);
          if (!result.headersSent && !res.headersSent) res.statusCode = 502;
          res.end();
        })
        .catch(() => res.destroy());
    });
    return `http://127.0.0.1:${await listen(server)}`;
  }

  it("streams the body both ways and applies Status and headers", async () => {
    const url = await serve(`printf 'Status: 201 Created\\r\\nContent-Type: application/x-test\\r\\nX-A: 1\\r\\n\\r\\n'; cat`);
    const body = randomBytes(3 * 1024 * 1024);
    const res = await fetch(url, { method: "POST", body });
    expect(res.status).to.equal(201);
    expect(res.headers.get("content-type")).to.equal("application/x-test");
    expect(res.headers.get("x-a")).to.equal("1");
    expect(Buffer.from(await res.arrayBuffer()).equals(body)).to.equal(true);
    expect(results[0]).to.include({ exitCode: 0, headersSent: true, clientGone: false });
  });

  it("accepts LF-only header blocks and reports a program that prints no headers", async () => {
    let url = await serve(`printf 'Content-Type: text/plain\\n\\nhello'`);
    let res = await fetch(url);
    expect(res.status).to.equal(200);
    expect(await res.text()).to.equal("hello");
    await new Promise<void>((resolve) => server!.close(() => resolve()));

    url = await serve(`echo oops >&2; exit 3`);
    res = await fetch(url);
    expect(res.status).to.equal(502);
    expect(results.at(-1)).to.include({ exitCode: 3, headersSent: false, stderr: "oops\n" });
  });

  it("kills the whole process group at once when the client disconnects", async () => {
    const url = await serve(`echo $$ > "$DIR/pid"; sleep 30 & echo $! > "$DIR/child"; printf 'Content-Type: text/plain\\r\\n\\r\\nstarted\\n'; wait`);
    await new Promise<void>((resolve, reject) => {
      const req = request(url, (res) => {
        res.once("data", () => {
          req.destroy();
          resolve();
        });
      });
      req.on("error", reject);
      req.end();
    });
    const pids = [Number(await readFile(join(dir, "pid"), "utf8")), Number(await readFile(join(dir, "child"), "utf8"))];
    await waitFor(() => results.length === 1);
    expect(results[0]).to.include({ clientGone: true, signal: "SIGTERM" });
    await waitFor(() => pids.every((pid) => !alive(pid)));
  });

  it("with exitGraceMs, closes stdin and lets the program finish by itself", async () => {
    const url = await serve(`printf 'Content-Type: text/plain\\r\\n\\r\\n'; cat > /dev/null; echo clean > "$DIR/done"`, {
      exitGraceMs: 5000,
    });
    await new Promise<void>((resolve, reject) => {
      // The client leaves once the program has answered its headers, body unfinished.
      const req = request(url, { method: "POST" }, (res) => {
        res.resume();
        req.destroy();
        resolve();
      });
      req.on("error", reject);
      req.write("partial body, never finished");
    });
    await waitFor(() => results.length === 1);
    expect(results[0]).to.include({ clientGone: true, exitCode: 0, signal: null });
    expect(await readFile(join(dir, "done"), "utf8")).to.equal("clean\n");
  });
});

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
