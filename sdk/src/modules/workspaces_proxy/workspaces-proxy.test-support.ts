// Fixtures of the workspace proxy tests: a platform answering for workspace credentials, a stand-in
// API server holding the workspaces' Services, a stand-in workspace (HTTP + WebSocket echo) and
// HTTP clients that send a workspace host to a loopback listener.
import { createHash } from "node:crypto";
import http from "node:http";
import type { LookupFunction } from "node:net";
import { WebSocketServer } from "ws";
import { listen } from "@kasbridge/testing/servers";
import { PlatformError, type WorkspaceAccessAnswer, type WorkspaceAccessRequest } from "../../platform-client/platform-client.js";
import { StaticPlatformClient } from "../../platform-client/static-platform-client.test-support.js";

export const ZONE = "ws.test";
export const WORKSPACE = "workspace-7-4-abcdef";
export const NAMESPACE = "gl-rd-ns-7-4-abcdef";
export const HOST = `3000-${WORKSPACE}.${ZONE}`;

export function answer(overrides: Partial<WorkspaceAccessAnswer["workspace"]> = {}, port = 3000): WorkspaceAccessAnswer {
  return {
    workspace: { id: 42, name: WORKSPACE, namespace: NAMESPACE, actualState: "Running", desiredState: "Running", ...overrides },
    agentId: 7,
    user: { id: 4, username: "dev" },
    target: { namespace: overrides.namespace ?? NAMESPACE, service: WORKSPACE, port },
    personalAccessToken: { id: 40 },
  };
}

/**
 * The platform's side: personal access tokens by secret, one-time callback tokens that become
 * session tokens, each valid for one host.
 */
export class WorkspacePlatform extends StaticPlatformClient {
  readonly pats = new Map<string, { host: string; answer: WorkspaceAccessAnswer }>();
  readonly callbacks = new Map<string, { host: string; answer: WorkspaceAccessAnswer }>();
  readonly sessions = new Map<string, { host: string; answer: WorkspaceAccessAnswer }>();
  lookups = 0;

  async authorizeWorkspaceAccess(req: WorkspaceAccessRequest): Promise<WorkspaceAccessAnswer> {
    this.lookups++;
    const table = req.accessType === "personal_access_token" ? this.pats : req.accessType === "workspace_callback" ? this.callbacks : this.sessions;
    const found = table.get(req.accessKey);
    if (!found) throw new PlatformError("unauthenticated", "bad credential");
    if (found.host !== req.host) throw new PlatformError(req.accessType === "personal_access_token" ? "not_found" : "unauthenticated", "other host");
    if (req.accessType !== "workspace_callback") return found.answer;
    this.callbacks.delete(req.accessKey);
    const session = `session-${req.accessKey}`;
    this.sessions.set(session, found);
    return { ...found.answer, session: { token: session, expiresAt: Date.now() + 3_600_000 } };
  }
}

/** A stand-in API server: GET of the Services in `services` (by "namespace/name"), 404 for others. */
export async function fakeApiServer(services: Map<string, Record<string, unknown>>): Promise<{ server: http.Server; url: string }> {
  const server = http.createServer((req, res) => {
    const m = /^\/api\/v1\/namespaces\/([^/]+)\/services\/([^/?]+)$/.exec(req.url ?? "");
    const svc = m && services.get(`${m[1]}/${m[2]}`);
    res.writeHead(svc ? 200 : 404, { "content-type": "application/json" });
    res.end(JSON.stringify(svc ?? { kind: "Status", reason: "NotFound", message: "not found" }));
  });
  return { server, url: `http://127.0.0.1:${await listen(server)}` };
}

export function workspaceService(agentId: string, workspaceId: string, ports: number[]): Record<string, unknown> {
  return {
    metadata: { labels: { "agent.gitlab.com/id": agentId }, annotations: { "workspaces.gitlab.com/id": workspaceId } },
    spec: { selector: { "agent.gitlab.com/id": agentId }, ports: ports.map((p) => ({ port: p, targetPort: p, protocol: "TCP" })) },
  };
}

/**
 * The workspace's container: `/headers` answers the request's headers and target, `/upload` the
 * size and SHA-256 of the body, `/stream` a body in parts; WebSockets echo.
 */
export async function fakeWorkspace(): Promise<{ server: http.Server; port: number; openSockets(): number }> {
  const server = http.createServer((req, res) => {
    if (req.url?.startsWith("/headers")) {
      res.writeHead(200, { "content-type": "application/json", "set-cookie": "app=1; Path=/" });
      res.end(JSON.stringify({ url: req.url, method: req.method, headers: req.headers }));
    } else if (req.url === "/upload") {
      const hash = createHash("sha256");
      let n = 0;
      req.on("data", (c: Buffer) => {
        hash.update(c);
        n += c.length;
      });
      req.on("end", () => res.writeHead(201, { "content-type": "text/plain" }).end(`${n} ${hash.digest("hex")}`));
    } else {
      res.writeHead(404).end("no such page");
    }
  });
  const wss = new WebSocketServer({ server });
  let open = 0;
  wss.on("connection", (socket) => {
    open++;
    socket.once("close", () => open--);
    socket.on("message", (data, isBinary) => socket.send(isBinary ? data : `echo: ${String(data)}`, { binary: isBinary }));
  });
  server.once("close", () => wss.close());
  return { server, port: await listen(server), openSockets: () => open };
}

/** Resolves every name to 127.0.0.1: a client sends the workspace host as a browser would, to a loopback listener. */
export const loopback: LookupFunction = (_hostname, options, callback) => {
  if ((options as { all?: boolean }).all) (callback as unknown as (e: null, a: Array<{ address: string; family: number }>) => void)(null, [{ address: "127.0.0.1", family: 4 }]);
  else callback(null, "127.0.0.1", 4);
};

export interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

/** One HTTP/1.1 request to `host` on the proxy's port. */
export function request(proxyPort: number, host: string, path: string, options: { method?: string; headers?: Record<string, string>; body?: Buffer } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port: proxyPort, path, method: options.method ?? "GET", headers: options.headers, lookup: loopback, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, text: Buffer.concat(chunks).toString("utf8") }));
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(options.body);
  });
}
