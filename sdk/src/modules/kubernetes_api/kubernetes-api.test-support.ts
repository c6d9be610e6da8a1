// Fixtures of the Kubernetes API proxy tests: a stand-in API server, the agent's kubeconfig for
// it, a CI job's allowed_agents answer and a platform answering for jobs and users.
import http from "node:http";
import type net from "node:net";
import { createHash } from "node:crypto";
import { PlatformError, type JobAllowedAgents, type ProxyUserAuthorizationAnswer } from "../../platform-client/platform-client.js";
import { StaticPlatformClient } from "../../platform-client/static-platform-client.test-support.js";
import { listen } from "@kasbridge/testing/servers";

export const job = (configuration: Record<string, unknown>, environment?: { slug: string; tier: string }): JobAllowedAgents => ({
  allowedAgents: [{ id: 7, configProject: { id: 3 }, configuration }],
  job: { id: 11 },
  pipeline: { id: 10 },
  project: { id: 5, groups: [{ id: 2 }, { id: 1 }] },
  user: { id: 4, username: "dev", rolesInProject: ["reporter", "developer"] },
  ...(environment ? { environment } : {}),
});

/**
 * A stand-in API server: echoes what it receives, streams a "watch" (`/watch`: its first event at
 * once, the last when the test calls `endWatches`; `/watch-forever` never ends), switches protocols
 * (SPDY/3.1: echoes in upper case). `openStreams()` counts the watches and upgraded connections it
 * holds open.
 */
export async function fakeApiServer(): Promise<{ server: http.Server; url: string; openStreams(): number; endWatches(): void }> {
  let open = 0;
  const held = (s: { once(e: "close", l: () => void): unknown }) => {
    open++;
    s.once("close", () => open--);
  };
  const endable = new Set<http.ServerResponse>();
  const server = http.createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://x");
    if (url.pathname === "/api/v1/namespaces") {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ kind: "NamespaceList", headers: req.headers, query: url.search, method: req.method }));
    } else if (url.pathname === "/watch" || url.pathname === "/watch-forever") {
      held(res);
      res.writeHead(200, { "content-type": "application/json", "transfer-encoding": "chunked" });
      res.write('{"type":"ADDED"}\n');
      if (url.pathname === "/watch") {
        endable.add(res);
        res.once("close", () => endable.delete(res));
      }
    } else if (url.pathname === "/echo") {
      const hash = createHash("sha256");
      let n = 0;
      req.on("data", (c: Buffer) => {
        hash.update(c);
        n += c.length;
      });
      req.on("end", () => {
        res.writeHead(201, { "content-type": "text/plain" });
        res.end(`${n} ${hash.digest("hex")}`);
      });
    } else {
      res.writeHead(404).end();
    }
  });
  server.on("upgrade", (req: http.IncomingMessage, socket: net.Socket) => {
    if (req.headers.upgrade !== "SPDY/3.1") {
      socket.end("HTTP/1.1 403 Forbidden\r\ncontent-length: 2\r\n\r\nno");
      return;
    }
    held(socket);
    socket.write("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n\r\n");
    socket.on("data", (d: Buffer) => socket.write(d.toString("utf8").toUpperCase()));
    socket.on("end", () => socket.end());
  });
  const port = await listen(server);
  return {
    server,
    url: `http://127.0.0.1:${port}`,
    openStreams: () => open,
    /** Sends the last event of every open `/watch` and ends it. */
    endWatches(): void {
      for (const res of endable) res.end('{"type":"DELETED"}\n');
    },
  };
}

/** The agent's kubeconfig for the stand-in API server (plain HTTP), with a bearer token. */
export async function kubeConfig(apiUrl: string, token: string) {
  const { KubeConfig } = await import("@kubernetes/client-node");
  const kc = new KubeConfig();
  kc.loadFromOptions({
    clusters: [{ name: "c", server: apiUrl, skipTLSVerify: true }],
    users: [{ name: "u", token }],
    contexts: [{ name: "x", cluster: "c", user: "u" }],
    currentContext: "x",
  });
  return kc;
}

export class ProxyPlatform extends StaticPlatformClient {
  jobs = new Map<string, JobAllowedAgents>();
  lookups = 0;
  slowLookups = 0;
  async allowedAgentsForJob(token: string, signal?: AbortSignal): Promise<JobAllowedAgents> {
    this.lookups++;
    if (token === "job-slow") {
      // Answers only once the client has gone (a platform that does not honour the abort).
      this.slowLookups++;
      await new Promise<void>((resolve) => (signal!.aborted ? resolve() : signal!.addEventListener("abort", () => resolve(), { once: true })));
    }
    const j = this.jobs.get(token);
    if (!j) throw new PlatformError("unauthenticated", "bad token");
    return j;
  }
  /** Personal access tokens besides "glpat-good" (user 4, developer of project 5, token 40). */
  users = new Map<string, ProxyUserAuthorizationAnswer>();
  userLookups = 0;
  async authorizeProxyUser(req: { agentId: number; accessKey: string }): Promise<ProxyUserAuthorizationAnswer> {
    this.userLookups++;
    const answer =
      req.accessKey === "glpat-good"
        ? ({
            agent: { id: 7, configProject: { id: 3 } },
            user: { id: 4, username: "dev" },
            accessAs: { user: { projects: [{ id: 5, roles: ["developer"] }], groups: [] } },
            personalAccessToken: { id: 40 },
          } satisfies ProxyUserAuthorizationAnswer)
        : this.users.get(req.accessKey);
    if (!answer) throw new PlatformError("unauthenticated", "bad");
    if (req.agentId !== answer.agent.id) throw new PlatformError("forbidden", "no");
    return answer;
  }
}
