/**
 * KAS's workspace proxy (kasbridge; GitLab runs a separate gitlab-workspaces-proxy behind cluster
 * ingress): `https://<port>-<workspace>.<dns_zone>` on a listener of its own, host-based routing.
 * Each request is authorized by the platform (only the workspace's owner, only a public endpoint's
 * port, only a running workspace) and sent down one of the workspace agent's tunnels as
 * `WorkspacesProxyService/MakeRequest`; the agent forwards it to the workspace's Service.
 *
 * Callers: API clients with a personal access token (`Authorization: Bearer`, `PRIVATE-TOKEN`);
 * browsers (IDEs, whose WebSockets cannot carry headers) with a cookie: a browser without one is
 * sent to the platform's login page, which sends the owner back to {@link WORKSPACE_CALLBACK_PATH}
 * on the workspace host with a one-time token; the proxy exchanges it for a session token, which
 * it keeps in an HttpOnly, Secure, host-only cookie. The credential (Authorization, PRIVATE-TOKEN,
 * the proxy's cookie) never reaches the workspace.
 *
 * HTTP/1.1 (over TLS with a wildcard certificate for the DNS zone, or plain behind a
 * TLS-terminating load balancer): WebSockets are HTTP/1.1 upgrades.
 */
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import https from "node:https";
import type { AddressInfo, Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { SecureContextOptions } from "node:tls";
import { Code, ConnectError } from "@connectrpc/connect";
import pino, { type Logger } from "pino";
import client, { Registry } from "prom-client";
import { isUpgradeRequest, rawResponseHead } from "../../../http/http-codec.js";
import { WORKSPACE_CALLBACK_PATH, WORKSPACE_LOGIN_PATH } from "../../../platform-client/internal-api-paths.js";
import type { PlatformClient, WorkspaceAccessAnswer } from "../../../platform-client/platform-client.js";
import type { AgentCalls } from "../../../tunnel/server/agent-calls.js";
import type { TunnelCall } from "../../../tunnel/server/server-tunnel.js";
import { applyHttp1Limits, resolveListenerLimits, type ListenerLimits } from "../../../transport/listener-limits.js";
import { hostPort } from "../../../util/host-port.js";
import { listen } from "../../../util/listen.js";
import { waitUntil } from "../../../util/timers.js";
import { WORKSPACES_PROXY_METHOD } from "../rpc.js";
import { parseWorkspaceHost } from "../workspace-host.js";
import { relayPlain, relayUpgrade, sendRequestHeader } from "./tunnel-relay.js";
import { WorkspaceAuthorizer, WorkspaceProxyError, type WorkspaceCredential } from "./workspace-authorizer.js";

/** The cookie that holds a browser's session on one workspace host. */
export const WORKSPACE_SESSION_COOKIE = "_kasbridge_workspace_session";

/** The workspace proxy's defaults of the limits every listener has (an IDE holds a few WebSockets and fetches many files). */
export const WORKSPACES_PROXY_LIMITS = {
  maxConnections: 10_000,
  maxConcurrentStreams: 100,
  headersTimeoutMs: 20_000,
  idleTimeoutMs: 600_000,
} as const;

/**
 * Options of {@link createWorkspacesProxy}. The limits ({@link ListenerLimits}) default to
 * {@link WORKSPACES_PROXY_LIMITS}: 10 000 connections, 20 000 ms for a TLS handshake and a request
 * head, an idle keep-alive connection closed after 600 000 ms. A request in progress (a WebSocket)
 * is never cut by them. `maxConcurrentStreams` does not apply (HTTP/1.1 only).
 */
export interface WorkspacesProxyOptions extends ListenerLimits {
  agentCalls: AgentCalls;
  platform: PlatformClient;
  logger?: Logger;
  /** Default "127.0.0.1". */
  host?: string;
  /** Default 8156; 0 picks a free port. */
  port?: number;
  /** A certificate for `*.<dns_zone>` (each agent's remote_development.dns_zone). Without: plain HTTP. */
  tls?: Pick<SecureContextOptions, "cert" | "key" | "ca" | "pfx" | "passphrase">;
  /**
   * The platform's public URL, where browsers without a session log in
   * (`<platformUrl>/-/kasbridge/workspaces/login`). A function is read at each redirect
   * (the platform may listen after KAS starts). Without it, browsers get 401 like API clients.
   */
  platformUrl?: string | (() => string | undefined);
  /** The scheme of workspace URLs as browsers see them (behind a TLS-terminating load balancer too). Default "https". */
  publicScheme?: "https" | "http";
  /** How long a platform answer is reused. Default 5 000 ms. */
  authCacheTtlMs?: number;
  /** How often the credential of a running request (a WebSocket) is asked about again. Default 60 000 ms; 0: never. */
  reauthorizeIntervalMs?: number;
  /** How long a request waits for a tunnel of the workspace's agent before 503. Default 10 000 ms. */
  tunnelWaitMs?: number;
  /** Largest request frame. Default 1 MiB. */
  maxFrameBytes?: number;
  /** Largest body of the workspace's answer refusing an upgrade. Default 65 536 bytes. */
  maxUpgradeRefusalBytes?: number;
  /** Where `kas_workspaces_proxy_requests_total` is registered. Default: a private registry. */
  metrics?: Registry;
}

export interface WorkspacesProxy {
  address: AddressInfo;
  /** "http://host:port" or "https://…": where the listener is (workspace hosts resolve to it). */
  url: string;
  /** Stops accepting, lets requests run up to `graceMs` (default 10 000), then ends them. */
  close(graceMs?: number): Promise<void>;
}

export async function createWorkspacesProxy(options: WorkspacesProxyOptions): Promise<WorkspacesProxy> {
  const logger = options.logger ?? pino({ level: "silent" });
  const authorizer = new WorkspaceAuthorizer({
    platform: options.platform,
    cacheTtlMs: options.authCacheTtlMs,
    reauthorizeIntervalMs: options.reauthorizeIntervalMs,
  });
  const registry = options.metrics ?? new Registry();
  const requestsTotal =
    (registry.getSingleMetric("kas_workspaces_proxy_requests_total") as client.Counter<"code"> | undefined) ??
    new client.Counter({
      name: "kas_workspaces_proxy_requests_total",
      help: "Requests to the workspace proxy, by HTTP status code answered (101: WebSockets).",
      labelNames: ["code"] as const,
      registers: [registry],
    });
  const publicScheme = options.publicScheme ?? "https";
  const tunnelWaitMs = options.tunnelWaitMs ?? 10_000;
  const relayOptions = {
    maxFrameBytes: options.maxFrameBytes ?? 1024 * 1024,
    maxRefusalBytes: options.maxUpgradeRefusalBytes ?? 64 * 1024,
    onInvalidHeader: (name: string) => logger.warn({ header: name }, "workspace proxy: dropped an invalid header from the workspace's answer"),
  };
  const shutdown = new AbortController();
  const calls = new Set<TunnelCall>();
  const sockets = new Set<Socket | Duplex>();

  /** Who the caller is, before asking the platform; undefined when no credential came. */
  function credentialOf(req: IncomingMessage): WorkspaceCredential | undefined {
    const bearer = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? "")?.[1];
    const privateToken = header(req.headers["private-token"])?.trim();
    if (bearer || privateToken) return { accessType: "personal_access_token", accessKey: (bearer ?? privateToken)! };
    const session = cookieValue(req.headers.cookie, WORKSPACE_SESSION_COOKIE);
    return session ? { accessType: "workspace_session", accessKey: session } : undefined;
  }

  /** A browser's page load (not an API client, not a WebSocket): it can be sent to log in. */
  function isBrowserNavigation(req: IncomingMessage): boolean {
    return (req.method === "GET" || req.method === "HEAD") && !isUpgradeRequest(req.headers) && /text\/html/i.test(req.headers.accept ?? "");
  }

  function loginRedirect(req: IncomingMessage, host: string): string | undefined {
    const platformUrl = typeof options.platformUrl === "function" ? options.platformUrl() : options.platformUrl;
    if (!platformUrl) return undefined;
    const login = new URL(WORKSPACE_LOGIN_PATH, platformUrl);
    login.searchParams.set("return_to", `${publicScheme}://${host}${req.url ?? "/"}`);
    return login.href;
  }

  /** Authorizes the request; answers (redirect, refusal) and returns undefined when it must not go on. */
  async function authorize(req: IncomingMessage, host: string, signal: AbortSignal): Promise<{ answer: WorkspaceAccessAnswer; credential: WorkspaceCredential }> {
    const credential = credentialOf(req);
    const toLogin = isBrowserNavigation(req) && credential?.accessType !== "personal_access_token" ? loginRedirect(req, host) : undefined;
    if (!credential) {
      if (toLogin) throw new Redirect(toLogin);
      throw new WorkspaceProxyError(401, "unauthorized: send a personal access token (Authorization: Bearer or PRIVATE-TOKEN), or log in with a browser");
    }
    let answer;
    try {
      answer = await authorizer.authorize(host, credential, signal);
    } catch (err) {
      // An expired or revoked browser session: log in again.
      if (err instanceof WorkspaceProxyError && err.status === 401 && toLogin) throw new Redirect(toLogin, true);
      throw err;
    }
    const w = answer.workspace;
    if (w.actualState !== "Running") {
      throw new WorkspaceProxyError(503, `workspace ${w.name} is not running (actual state ${w.actualState}, desired state ${w.desiredState})`);
    }
    return { answer, credential };
  }

  /** The callback: the platform's one-time token becomes the session cookie. */
  async function callback(req: IncomingMessage, res: ServerResponse, host: string, url: URL): Promise<number> {
    const token = url.searchParams.get("token");
    if (!token) throw new WorkspaceProxyError(400, "the callback needs the platform's token");
    const answer = await authorizer.authorize(host, { accessType: "workspace_callback", accessKey: token });
    if (!answer.session) throw new WorkspaceProxyError(502, "the platform answered the callback without a session");
    const maxAge = Math.max(0, Math.floor((answer.session.expiresAt - Date.now()) / 1000));
    res.writeHead(302, {
      Location: safeReturnPath(url.searchParams.get("return_to")),
      // Host-only (no Domain): a session of one workspace port is sent nowhere else.
      "Set-Cookie": `${WORKSPACE_SESSION_COOKIE}=${answer.session.token}; Path=/; Max-Age=${maxAge}; HttpOnly; Secure; SameSite=Lax`,
      "Cache-Control": "no-store",
      "Content-Length": "0",
    });
    res.end();
    void req.resume();
    return 302;
  }

  async function startCall(agentId: number, signal: AbortSignal): Promise<TunnelCall> {
    if (shutdown.signal.aborted) throw new WorkspaceProxyError(503, "KAS is shutting down");
    const wait = AbortSignal.any([signal, shutdown.signal, AbortSignal.timeout(tunnelWaitMs)]);
    try {
      const call = await options.agentCalls.start(agentId, WORKSPACES_PROXY_METHOD, {}, wait);
      calls.add(call);
      return call;
    } catch (err) {
      throw new WorkspaceProxyError(503, `the workspace's agent ${agentId} is not connected (${ConnectError.from(err).rawMessage})`);
    }
  }

  /** What the workspace sees of the request's headers: no credential of ours, forwarding headers added. */
  function forwardedHeaders(req: IncomingMessage, host: string): IncomingMessage["headers"] {
    const headers = { ...req.headers };
    delete headers.authorization;
    delete headers["private-token"];
    const cookie = withoutCookie(req.headers.cookie, WORKSPACE_SESSION_COOKIE);
    if (cookie) headers.cookie = cookie;
    else delete headers.cookie;
    headers["x-forwarded-proto"] = publicScheme;
    headers["x-forwarded-host"] = host;
    headers["x-forwarded-for"] = req.socket.remoteAddress ?? "";
    return headers;
  }

  /** One request, plain (`res`) or upgrade (`socket`): every answer and failure is handled here. */
  async function handle(req: IncomingMessage, target: { res: ServerResponse } | { socket: Duplex; head: Buffer }): Promise<void> {
    const startedAt = Date.now();
    const life = new AbortController();
    const gone = () => life.abort(new WorkspaceProxyError(499, "client went away"));
    const closer = "res" in target ? target.res : target.socket;
    closer.once("close", gone);
    let status = 0;
    let call: TunnelCall | undefined;
    let release = () => {};
    let who: WorkspaceAccessAnswer | undefined;
    try {
      const host = header(req.headers.host) ?? "";
      if (!parseWorkspaceHost(host)) throw new WorkspaceProxyError(404, `${host || "(no host)"} is not a workspace host (<port>-<workspace>.<dns zone>)`);
      const url = new URL(req.url ?? "/", "http://x");
      if (url.pathname === WORKSPACE_CALLBACK_PATH && "res" in target) {
        status = await callback(req, target.res, host, url);
        return;
      }
      const { answer, credential } = await authorize(req, host, life.signal);
      who = answer;
      call = await startCall(answer.agentId, life.signal);
      const running = call;
      release = authorizer.track(host, credential, answer, (reason) => life.abort(reason));
      life.signal.addEventListener("abort", () => running.cancel(new ConnectError(String((life.signal.reason as Error).message), Code.Canceled)), { once: true });
      const upgrade = "socket" in target;
      await sendRequestHeader(call, req, forwardedHeaders(req, host), answer, upgrade);
      status = "res" in target ? await relayPlain(call, req, target.res, relayOptions) : await relayUpgrade(call, target.socket, target.head, relayOptions);
    } catch (err) {
      const reason = life.signal.aborted ? (life.signal.reason as WorkspaceProxyError) : err;
      status = answerFailure(reason, target);
      if (!(reason instanceof WorkspaceProxyError) && !(reason instanceof Redirect) && !(reason instanceof ConnectError)) logger.warn({ err: reason, method: req.method }, "workspace proxy: request failed");
    } finally {
      release();
      closer.off("close", gone);
      if (call) {
        call.cancel();
        calls.delete(call);
      }
      requestsTotal.inc({ code: String(status) });
      logger.info(
        { method: req.method, host: req.headers.host, status, userId: who?.user.id, workspace: who?.workspace.name, agentId: who?.agentId, durationMs: Date.now() - startedAt },
        "workspace proxy request",
      );
    }
  }

  // handle() answers every failure it knows of; this catches one in answering, on its one request.
  const failedOutside = (req: IncomingMessage, target: { destroy(): unknown }) => (err: unknown) => {
    logger.warn({ err, method: req.method }, "workspace proxy: a request failed outside its handler");
    target.destroy();
  };
  const onRequest = (req: IncomingMessage, res: ServerResponse) => void handle(req, { res }).catch(failedOutside(req, res));
  const limits = resolveListenerLimits(options, WORKSPACES_PROXY_LIMITS);
  const server = options.tls
    ? https.createServer({ ...options.tls, ALPNProtocols: ["http/1.1"], handshakeTimeout: limits.headersTimeoutMs }, onRequest)
    : http.createServer(onRequest);
  server.setTimeout(0);
  // No time limit for a whole request: an upload to the workspace takes as long as it takes.
  applyHttp1Limits(server, limits, { requestTimeoutMs: 0 });
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.setNoDelay(true);
    socket.once("close", () => sockets.delete(socket));
  });
  server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    socket.on("error", () => {});
    void handle(req, { socket, head }).catch(failedOutside(req, socket));
  });
  await listen(server, options.port ?? 8156, options.host ?? "127.0.0.1");
  const address = server.address() as AddressInfo;
  const url = `${options.tls ? "https" : "http"}://${hostPort(address.address, address.port)}`;
  logger.info({ url }, "workspace proxy listening");

  let closing: Promise<void> | undefined;
  return {
    address,
    url,
    close(graceMs = 10_000) {
      closing ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        server.closeIdleConnections();
        await waitUntil(() => calls.size === 0, graceMs, 50);
        shutdown.abort();
        for (const call of calls) call.cancel(new ConnectError("KAS is shutting down", Code.Unavailable));
        authorizer.close();
        for (const socket of sockets) socket.destroy();
        server.closeAllConnections();
        await closed;
      })();
      return closing;
    },
  };
}

/** A browser sent to log in (again: `clearCookie` drops a session that no longer works). */
class Redirect extends Error {
  constructor(
    readonly location: string,
    readonly clearCookie = false,
  ) {
    super("redirect to login");
  }
}

/** Answers a failure if nothing was answered yet, else cuts the connection; the status it counts as. */
function answerFailure(failure: unknown, target: { res: ServerResponse } | { socket: Duplex }): number {
  const err = failure instanceof ConnectError ? fromAgent(failure) : failure;
  const status = err instanceof Redirect ? 302 : err instanceof WorkspaceProxyError ? err.status : 502;
  const headers: Record<string, string> = { "Cache-Control": "no-store" };
  let body = "";
  if (err instanceof Redirect) {
    headers.Location = err.location;
    if (err.clearCookie) headers["Set-Cookie"] = `${WORKSPACE_SESSION_COOKIE}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax`;
  } else {
    body = `${err instanceof WorkspaceProxyError ? err.message : "the workspace could not be reached"}\n`;
    headers["Content-Type"] = "text/plain; charset=utf-8";
    if (status === 401) headers["WWW-Authenticate"] = 'Bearer realm="kasbridge workspaces"';
  }
  headers["Content-Length"] = String(Buffer.byteLength(body));
  if (status === 499) {
    ("res" in target ? target.res : target.socket).destroy();
  } else if ("res" in target) {
    const res = target.res;
    if (res.headersSent) res.destroy();
    else res.writeHead(status, headers).end(body);
  } else if (target.socket.writable) {
    target.socket.end(rawResponseHead(status, http.STATUS_CODES[status] ?? "Error", { ...headers, Connection: "close" }) + body);
  } else {
    target.socket.destroy();
  }
  return status;
}

/** The HTTP status of an agent's refusal or failure, by its gRPC code (others: 502). */
const AGENT_CODE_STATUS: ReadonlyMap<Code, number> = new Map([
  [Code.InvalidArgument, 400],
  [Code.PermissionDenied, 403],
  [Code.NotFound, 404],
  [Code.FailedPrecondition, 503],
  [Code.Unavailable, 503],
]);

/** The agent's refusal or failure as the proxy answers it. */
function fromAgent(err: ConnectError): WorkspaceProxyError {
  return new WorkspaceProxyError(AGENT_CODE_STATUS.get(err.code) ?? 502, `the workspace could not be reached: ${err.rawMessage}`);
}

function header(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/** The value of cookie `name` in a Cookie header (the first, if repeated). */
export function cookieValue(cookieHeader: string | undefined, name: string): string | undefined {
  for (const part of (cookieHeader ?? "").split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim() || undefined;
  }
  return undefined;
}

/** The Cookie header without cookie `name` (undefined when nothing is left). */
export function withoutCookie(cookieHeader: string | undefined, name: string): string | undefined {
  const kept = (cookieHeader ?? "")
    .split(";")
    .map((p) => p.trim())
    .filter((p) => p !== "" && p.slice(0, Math.max(0, p.indexOf("="))).trim() !== name);
  return kept.length > 0 ? kept.join("; ") : undefined;
}

/** A path on this host to return to after the callback: never another origin ("//x", "/\\x", "https://x"). */
function safeReturnPath(value: string | null): string {
  if (!value || !value.startsWith("/") || value.startsWith("//") || /[\\\s]/.test(value)) return "/";
  return value;
}
