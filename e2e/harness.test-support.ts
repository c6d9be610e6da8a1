// Real `kas` and `agentk` processes for the e2e tests (a *.test-support.ts file: no tests).
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createClient, type Client } from "@connectrpc/connect";
import { createGrpcTransport, Http2SessionManager } from "@connectrpc/connect-node";
import { decodeSecret } from "@kasbridge/sdk/auth";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { EchoRequestSchema, EchoResponseSchema, EchoService } from "@kasbridge/sdk/gen/kasbridge/echo/v1/echo_pb";
import { callThroughReplica, PeerSessions } from "@kasbridge/sdk/replicas";
import { internalApiClientInterceptor } from "@kasbridge/sdk/kas";
import { waitFor } from "@kasbridge/testing/wait";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
export const kasBin = join(root, "reference-server", "bin", "kas.js");
export const agentkBin = join(root, "reference-agent", "bin", "agentk.js");
export const adminToken = "glpat-e2e-admin-token-0123456789abcdef";

/** A child process with its output captured (stdout and stderr; stdout alone too); stopped on cleanup. */
export class Proc {
  output = "";
  stdout = "";
  readonly exited: Promise<number | null>;
  constructor(readonly child: ChildProcess) {
    child.stdout?.on("data", (d: Buffer) => {
      this.output += d.toString();
      this.stdout += d.toString();
    });
    child.stderr?.on("data", (d: Buffer) => (this.output += d.toString()));
    this.exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Waits until the output matches `pattern`; fails, showing the output, when the process exits first or after `timeoutMs`. */
  async waitFor(pattern: RegExp, what = String(pattern), timeoutMs = 15_000): Promise<RegExpExecArray> {
    let match: RegExpExecArray | null = null;
    await waitFor(() => (match = pattern.exec(this.output)) !== null || !this.running, timeoutMs, what).catch((e: Error) => {
      throw new Error(`${e.message}; the process said:\n${this.output.slice(-4000)}`);
    });
    if (!match) throw new Error(`process exited (${this.child.exitCode ?? this.child.signalCode}) before ${what}:\n${this.output.slice(-4000)}`);
    return match;
  }

  count(pattern: RegExp): number {
    return this.output.match(new RegExp(pattern.source, "g"))?.length ?? 0;
  }

  async stop(signal: NodeJS.Signals = "SIGTERM", timeoutMs = 15_000): Promise<number | null> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill(signal);
      const timer = setTimeout(() => this.child.kill("SIGKILL"), timeoutMs);
      const code = await this.exited;
      clearTimeout(timer);
      return code;
    }
    return this.child.exitCode;
  }
}

export interface KasProcess extends Proc {
  dataDir: string;
  addresses: { platform?: string; agent: string; internal: string; observability: string; k8sProxy?: string; private?: string; workspacesProxy?: string };
  secret: Uint8Array;
}

/** Spawns `kas` (with `args`) on port 0 everywhere, in `dataDir`; `env` comes on top. */
export function spawnKas(env: Record<string, string>, dataDir: string, args: string[] = []): Proc {
  const child = spawn(process.execPath, [kasBin, ...args], {
    env: {
      ...process.env,
      KAS_DATA_DIR: dataDir,
      KAS_PLATFORM_ADDR: "127.0.0.1:0",
      KAS_AGENT_ADDR: "127.0.0.1:0",
      KAS_OBSERVABILITY_ADDR: "127.0.0.1:0",
      KAS_INTERNAL_ADDR: "127.0.0.1:0",
      KAS_K8S_PROXY_ADDR: "127.0.0.1:0",
      KAS_PRIVATE_ADDR: "127.0.0.1:0",
      KAS_WORKSPACES_PROXY_ADDR: "127.0.0.1:0",
      KAS_ADMIN_TOKEN: adminToken,
      KAS_LOG_LEVEL: "debug",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  return new Proc(child);
}

/**
 * Starts `kas` on port 0 everywhere with a fresh data directory (removed at cleanup), or in
 * `dataDir` (kept at cleanup unless `removeDataDir`: replicas share one).
 */
export async function startKas(
  env: Record<string, string> = {},
  dataDir = mkdtempSync(join(tmpdir(), "kas-e2e-")),
  { removeDataDir = true }: { removeDataDir?: boolean } = {},
): Promise<KasProcess & { cleanup(): Promise<void> }> {
  const proc = spawnKas(env, dataDir) as Proc & Partial<KasProcess>;
  const cleanup = async () => {
    try {
      await proc.stop();
    } finally {
      if (removeDataDir) rmSync(dataDir, { recursive: true, force: true });
    }
  };
  try {
    const match = await proc.waitFor(/KAS_LISTENING (\{.*\})/);
    proc.addresses = JSON.parse(match[1]);
    proc.dataDir = dataDir;
    proc.secret = decodeSecret(readFileSync(env.KAS_API_SECRET_FILE ?? join(dataDir, ".gitlab_kas_secret"), "utf8"));
  } catch (error) {
    // A kas that did not come up is not left running.
    await cleanup();
    throw error;
  }
  return Object.assign(proc as KasProcess, { cleanup });
}

/** Starts `agentk` with a token file; its observability listener on a free loopback port (not GitLab's :8080), unless `args` say otherwise. */
export function startAgentk(kasAddress: string, token: string, extraEnv: Record<string, string> = {}, args: string[] = []): Proc & { cleanup(): Promise<void> } {
  const dir = mkdtempSync(join(tmpdir(), "agentk-e2e-"));
  const tokenFile = join(dir, "token");
  writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
  const child = spawn(process.execPath, [agentkBin, "--kas-address", kasAddress, "--token-file", tokenFile, "--log-level", "debug", "--observability-listen-address", "127.0.0.1:0", ...args], {
    env: { ...process.env, POD_NAME: "agentk-e2e-pod", POD_NAMESPACE: "gitlab-agent", ...extraEnv },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const proc = new Proc(child);
  return Object.assign(proc, {
    async cleanup() {
      try {
        await proc.stop("SIGKILL");
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  });
}

/** REST call to the platform with the admin token; returns status and parsed JSON. */
export async function api(kas: KasProcess, method: string, path: string, body?: unknown, token = adminToken) {
  const res = await fetch(`${kas.addresses.platform}/api/v4${path}`, {
    method,
    headers: { "PRIVATE-TOKEN": token, ...(body === undefined ? {} : { "content-type": "application/json" }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : undefined };
}

/** Creates a project, an agent and a token over REST. */
export async function createAgentWithToken(kas: KasProcess, name = `agent-${Math.random().toString(36).slice(2, 8)}`) {
  const project = await api(kas, "POST", "/projects", { name: `proj-${name}` });
  if (project.status !== 201) throw new Error(`create project: ${project.status} ${JSON.stringify(project.json)}`);
  const agent = await api(kas, "POST", `/projects/${project.json.id}/cluster_agents`, { name });
  if (agent.status !== 201) throw new Error(`create agent: ${agent.status} ${JSON.stringify(agent.json)}`);
  const token = await api(kas, "POST", `/projects/${project.json.id}/cluster_agents/${agent.json.id}/tokens`, { name: "t1" });
  if (token.status !== 201) throw new Error(`create token: ${token.status} ${JSON.stringify(token.json)}`);
  return { projectId: project.json.id as number, agentId: agent.json.id as number, tokenId: token.json.id as number, token: token.json.token as string };
}

/** An EchoService client through KAS's internal API, routed to `agentId`. */
export function echoClient(kas: KasProcess, agentId: number): { client: Client<typeof EchoService>; close(): void } {
  const baseUrl = kas.addresses.internal.replace(/^grpc:/, "http:");
  const sessions = new Http2SessionManager(baseUrl, undefined, { settings: { initialWindowSize: 4 << 20 } });
  const client = createClient(
    EchoService,
    createGrpcTransport({
      baseUrl,
      sessionManager: sessions,
      interceptors: [internalApiClientInterceptor(kas.secret, agentId)],
      readMaxBytes: 64 << 20,
    }),
  );
  return { client, close: () => sessions.abort() };
}

/**
 * EchoService/Echo as another replica calls it: through `privateUrl` (a kas's private API, GitLab's
 * gateway sequence) with the replicas' secret. Rejects with the call's ConnectError.
 */
export async function echoThroughPrivateApi(privateUrl: string, secret: Uint8Array, agentId: number, payload: Uint8Array, ca?: Buffer): Promise<Uint8Array> {
  const peers = new PeerSessions({ jwtSecret: secret, ca });
  try {
    const call = await callThroughReplica(peers, privateUrl, agentId, "/kasbridge.echo.v1.EchoService/Echo", {}, { maxMessageBytes: 1 << 20 });
    await call.send(toBinary(EchoRequestSchema, create(EchoRequestSchema, { payload })));
    await call.closeSend();
    let reply: Uint8Array | undefined;
    for await (const event of call.events) {
      if (event.kind === "message") reply = fromBinary(EchoResponseSchema, event.data).payload;
      if (event.kind === "end" && event.error) throw event.error;
    }
    if (!reply) throw new Error("no reply message");
    return reply;
  } finally {
    peers.close();
  }
}
