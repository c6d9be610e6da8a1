// The real kubectl in end-to-end tests (a *.test-support.ts file: no tests): one-shot runs with
// extra environment, what the API server says about the long-running requests it holds, a kwok
// pod and a TCP server for port-forwards to reach. Long-running kubectl processes (watches,
// `logs -f`, exec, port-forward) are the harness's `Proc`.
import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { connect, createServer, type Socket } from "node:net";
import { KWOK_NODE_NAME, type ControlPlane, type RunResult } from "../tools/control-plane/control-plane.js";
import { closeServer, listen } from "@kasbridge/testing/servers";

/** Runs a command to its end with `input` on stdin (none: stdin closed) and extra environment; killed after 60 s. */
export function runWithInput(cmd: string, args: string[], input: string | undefined, env: Record<string, string>): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: [input === undefined ? "ignore" : "pipe", "pipe", "pipe"] });
    if (input !== undefined) child.stdin!.end(input);
    let stdout = "";
    let stderr = "";
    child.stdout!.on("data", (d: Buffer) => (stdout += d.toString()));
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, stdout, stderr });
    });
  });
}

/**
 * The API server's count of its open long-running requests (watches, `logs -f`, upgrades) of one
 * kind (`apiserver_longrunning_requests`).
 */
export async function longRunningRequests(cp: ControlPlane, verb: string, resource: string, subresource = ""): Promise<number> {
  const metrics = (await cp.runKubectl(["get", "--raw", "/metrics"])).stdout;
  let sum = 0;
  for (const line of metrics.split("\n")) {
    if (!line.startsWith("apiserver_longrunning_requests{")) continue;
    if (line.includes(`resource="${resource}"`) && line.includes(`subresource="${subresource}"`) && line.includes(`verb="${verb}"`)) sum += Number(line.split(" ").pop());
  }
  return sum;
}

/** A TCP server for kwok's port-forward to reach: greets with `banner`, then echoes. */
export interface ForwardTarget {
  port: number;
  /** "kasbridge-target <port>\n", the first line every connection gets. */
  banner: string;
  close(): Promise<void>;
}

export async function startForwardTarget(): Promise<ForwardTarget> {
  const sockets = new Set<Socket>();
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {});
    socket.write(banner);
    socket.pipe(socket);
  });
  const port = await listen(server);
  const banner = `kasbridge-target ${port}\n`;
  return {
    port,
    banner,
    close() {
      for (const socket of sockets) socket.destroy();
      return closeServer(server);
    },
  };
}

/** The pod `web` in `default` on kwok's node, with one container port (logs, exec, attach, cp, port-forward go to it). */
export async function createWebPod(cp: ControlPlane, containerPort: number): Promise<void> {
  await cp.runKubectl(["apply", "-f", "-"], {
    input: JSON.stringify({
      apiVersion: "v1",
      kind: "Pod",
      metadata: { name: "web", namespace: "default" },
      spec: { nodeName: KWOK_NODE_NAME, containers: [{ name: "web", image: "registry.example/web:1", ports: [{ containerPort }] }] },
    }),
  });
}

export function sha256(data: Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

/** Connects, writes `payload` and collects `expected` bytes. */
export function roundTrip(port: number, payload: Buffer, expected: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let length = 0;
    const socket: Socket = connect(port, "127.0.0.1", () => socket.write(payload));
    socket.on("data", (d: Buffer) => {
      chunks.push(d);
      length += d.length;
      if (length >= expected) {
        socket.destroy();
        resolve(Buffer.concat(chunks));
      }
    });
    socket.on("error", reject);
    socket.on("close", () => {
      if (length < expected) reject(new Error(`connection closed after ${length} of ${expected} bytes`));
    });
  });
}
