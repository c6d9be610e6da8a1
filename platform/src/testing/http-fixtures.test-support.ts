/**
 * Test harness (a *.test-support.ts file: no tests, not in the package): a real platform HTTP server on an
 * ephemeral port with the REST and internal APIs, over a throwaway store, plus a small client.
 */
import { randomBytes } from "node:crypto";
import http from "node:http";
import express from "express";
import { signKasApiRequestJwt } from "@kasbridge/sdk/auth";
import { createInternalApi } from "../api/internal-api.js";
import { createPlatformApi } from "../api/rest-api.js";
import { bootstrapAdmin } from "../bootstrap.js";
import type { AgentConnection, AgentConnectionsSource } from "@kasbridge/sdk/platform-client";
import { closeServer, listen } from "@kasbridge/testing/servers";
import { rejectionOf } from "@kasbridge/testing/wait";
import { PlatformError } from "@kasbridge/sdk/platform-client";
import { createPlatformServices, type PlatformServices, type PlatformServicesOptions } from "../services/platform-services.js";
import type { Store } from "../store/store.js";

/** An AgentConnectionsSource whose answer the test sets. */
export class FakeConnections implements AgentConnectionsSource {
  byAgent = new Map<number, AgentConnection[]>();
  failWith: Error | undefined;
  listConnections(agentId: number): Promise<AgentConnection[]> {
    if (this.failWith) return Promise.reject(this.failWith);
    return Promise.resolve(this.byAgent.get(agentId) ?? []);
  }
}

export interface TestPlatform {
  baseUrl: string;
  services: PlatformServices;
  jwtSecret: Uint8Array;
  /** PAT of the bootstrap admin `root`. */
  adminToken: string;
  connections: FakeConnections;
  close(): Promise<void>;
}

/**
 * Starts the platform over `store` (see useTestStore, which empties it before each test).
 * close() stops the server; the store stays open for the next test.
 */
export async function startTestPlatform(
  store: Store,
  options: { now?: () => Date; k8sProxyUrl?: string; metrics?: PlatformServicesOptions["metrics"] } = {},
): Promise<TestPlatform> {
  const services = createPlatformServices({ store, now: options.now, metrics: options.metrics });
  const jwtSecret = new Uint8Array(randomBytes(32));
  const connections = new FakeConnections();
  const adminToken = "glpat-" + randomBytes(20).toString("hex");
  await bootstrapAdmin(store, { dataDir: "/nonexistent-not-written", adminToken, services });

  const app = express();
  app.use(createInternalApi({ services, jwtSecret }));
  app.use(createPlatformApi({ services, connections, externalUrl: "https://platform.test", k8sProxyUrl: options.k8sProxyUrl }));
  app.use((_req, res) => {
    res.status(404).json({ message: "404 Not Found" });
  });
  const server = http.createServer(app);
  const port = await listen(server);
  return {
    baseUrl: `http://127.0.0.1:${port}`,
    services,
    jwtSecret,
    adminToken,
    connections,
    async close() {
      server.closeAllConnections();
      await closeServer(server);
    },
  };
}

export interface ApiResponse {
  status: number;
  // Tests inspect arbitrary JSON.
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  body: any;
  headers: Headers;
}

export interface RequestOptions {
  token?: string;
  /** Send the token as `Authorization: Bearer` instead of `PRIVATE-TOKEN`. */
  bearer?: boolean;
  body?: unknown;
  /** Sent as-is with content-type application/json. */
  rawBody?: string;
  headers?: Record<string, string>;
}

export async function call(baseUrl: string, method: string, path: string, options: RequestOptions = {}): Promise<ApiResponse> {
  const headers: Record<string, string> = { ...options.headers };
  if (options.token !== undefined) {
    if (options.bearer) headers.authorization = `Bearer ${options.token}`;
    else headers["private-token"] = options.token;
  }
  let body: string | undefined;
  if (options.rawBody !== undefined || options.body !== undefined) {
    headers["content-type"] = "application/json";
    body = options.rawBody ?? JSON.stringify(options.body);
  }
  const res = await fetch(baseUrl + path, { method, headers, body });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : undefined, headers: res.headers };
}

/** Headers of an internal API call: a fresh KAS JWT and, optionally, an agent token. */
export async function kasHeaders(secret: Uint8Array, agentToken?: string, nowMs?: number): Promise<Record<string, string>> {
  const headers: Record<string, string> = { "Gitlab-Kas-Api-Request": await signKasApiRequestJwt(secret, nowMs) };
  if (agentToken !== undefined) headers.authorization = `Bearer ${agentToken}`;
  return headers;
}

/** The PlatformError `p` rejects with; throws when it resolves or fails otherwise. */
export function platformError(p: Promise<unknown>): Promise<PlatformError> {
  return rejectionOf(p, PlatformError);
}

/**
 * POSTs a body that never ends (`prefix`, then chunked 64 KiB at a time, respecting backpressure) until the
 * server closes the connection; resolves with the bytes written by then. Fails after 256 MiB.
 */
export function sendEndlessly(url: string, headers: Record<string, string>, prefix?: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const chunk = Buffer.alloc(64 * 1024, 0x61);
    let sent = 0;
    const req = http.request(url, { method: "POST", headers });
    if (prefix) {
      req.write(prefix);
      sent += prefix.length;
    }
    req.on("response", (res) => res.resume());
    const done = () => resolve(sent);
    req.on("error", done);
    req.on("close", done);
    const pump = () => {
      while (!req.destroyed) {
        if (sent > 256 * 1024 * 1024) {
          req.destroy();
          reject(new Error("the server never disconnected"));
          return;
        }
        sent += chunk.length;
        if (!req.write(chunk)) {
          req.once("drain", pump);
          return;
        }
      }
    };
    pump();
  });
}
