/**
 * The HTTP/2 client of the Kubernetes API proxy benchmarks (bench/kubeproxy-client.ts,
 * bench/tracing-client.ts): one connection per target, as kubectl's client-go over TLS, and the
 * latency (sequential, in blocks rotating between targets) and throughput (requests in flight on
 * the one connection) measurements they share.
 */
import http2 from "node:http2";
import { percentile, streamWindowBytes, widenConnectionWindow } from "./common.js";

const MiB = 1 << 20;

export interface LatencyResult {
  n: number;
  p50: number;
  p99: number;
  mean: number;
  bytesPerResponse: number;
}
export interface ThroughputResult {
  n: number;
  seconds: number;
  requestsPerSecond: number;
  mibPerSecond: number;
}
export interface ListSpec {
  path: string;
  accept: string;
  items: number;
}

interface Response {
  status: number;
  bytes: number;
  body?: Buffer;
}

/** One HTTP/2 connection to a target, authenticated with a bearer token. */
export class Client {
  private session: http2.ClientHttp2Session | undefined;
  private readonly origin: string;
  private readonly base: string;

  constructor(
    readonly name: string,
    url: string,
    private readonly ca: Buffer,
    private readonly token: string,
  ) {
    const u = new URL(url);
    this.origin = u.origin;
    this.base = u.pathname.replace(/\/$/, "");
  }

  private connect(): http2.ClientHttp2Session {
    if (this.session && !this.session.closed && !this.session.destroyed) return this.session;
    const session = http2.connect(this.origin, { ca: this.ca, settings: { initialWindowSize: streamWindowBytes } });
    widenConnectionWindow(session);
    session.on("error", () => {});
    this.session = session;
    return session;
  }

  open(method: string, path: string, headers: http2.OutgoingHttpHeaders = {}): http2.ClientHttp2Stream {
    return this.connect().request({
      ":method": method,
      ":path": this.base + path,
      authorization: `Bearer ${this.token}`,
      "user-agent": "kasbridge-bench",
      ...headers,
    }, { endStream: method === "GET" });
  }

  request(method: string, path: string, options: { accept?: string; body?: string; keepBody?: boolean } = {}): Promise<Response> {
    return new Promise((resolve, reject) => {
      const headers: http2.OutgoingHttpHeaders = { accept: options.accept ?? "application/json" };
      if (options.body !== undefined) headers["content-type"] = "application/json";
      const stream = this.open(method, path, headers);
      let status = 0;
      let bytes = 0;
      const chunks: Buffer[] = [];
      stream.on("response", (h) => (status = Number(h[":status"])));
      stream.on("data", (chunk: Buffer) => {
        bytes += chunk.length;
        if (options.keepBody || status >= 300) chunks.push(chunk);
      });
      stream.on("end", () => {
        const body = Buffer.concat(chunks);
        if (status >= 300 && !(method === "POST" && status === 409)) reject(new Error(`${this.name} ${method} ${path}: ${status} ${body.toString("utf8").slice(0, 300)}`));
        else resolve({ status, bytes, body: options.keepBody ? body : undefined });
      });
      stream.on("error", reject);
      if (options.body !== undefined) stream.end(options.body);
    });
  }

  close(): void {
    this.session?.close();
  }
}

export async function inParallel(n: number, limit: number, task: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(limit, n) }, async () => {
      while (next < n) await task(next++);
    }),
  );
}

/** Sequential requests in blocks that rotate between the targets (same minute, same load). */
export async function latency(clients: Client[], spec: ListSpec, n: number, block: number): Promise<Record<string, LatencyResult>> {
  const times = new Map<string, number[]>(clients.map((c) => [c.name, []]));
  const bytes = new Map<string, number>();
  for (let done = 0; done < n; done += block) {
    for (const c of clients) {
      for (let i = 0; i < Math.min(block, n - done); i++) {
        const t0 = performance.now();
        const r = await c.request("GET", spec.path, { accept: spec.accept });
        times.get(c.name)!.push(performance.now() - t0);
        bytes.set(c.name, r.bytes);
      }
    }
  }
  return Object.fromEntries(
    clients.map((c) => {
      const t = times.get(c.name)!.sort((a, b) => a - b);
      return [c.name, { n: t.length, p50: percentile(t, 50), p99: percentile(t, 99), mean: t.reduce((s, x) => s + x, 0) / t.length, bytesPerResponse: bytes.get(c.name) ?? 0 }];
    }),
  );
}

/** `n` requests with `concurrency` in flight on the target's one connection. */
export async function throughput(client: Client, spec: ListSpec, n: number, concurrency: number): Promise<ThroughputResult> {
  let bytes = 0;
  const t0 = performance.now();
  await inParallel(n, concurrency, async () => {
    bytes += (await client.request("GET", spec.path, { accept: spec.accept })).bytes;
  });
  const seconds = (performance.now() - t0) / 1000;
  return { n, seconds, requestsPerSecond: n / seconds, mibPerSecond: bytes / MiB / seconds };
}

/** Asks the parent (over IPC) to read the servers' CPU time; resolves once it has (a "mark"). */
export function mark(): Promise<void> {
  return new Promise((resolve) => {
    const onMessage = (msg: { type: string }) => {
      if (msg.type !== "marked") return;
      process.off("message", onMessage);
      resolve();
    };
    process.on("message", onMessage);
    process.send!({ type: "mark" });
  });
}
