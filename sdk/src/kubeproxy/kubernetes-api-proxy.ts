/**
 * KAS's Kubernetes API proxy (GitLab port 8154): kubectl talks HTTP to KAS, KAS authenticates the
 * caller (CI job token or personal access token), decides the impersonation from the agent's
 * ci_access/user_access, and sends the request through one of the agent's tunnels as
 * `KubernetesApi/MakeRequest` frames; the agent forwards it to its cluster's API server.
 *
 * Streams both ways with backpressure (request body -> `data` frames, response body <- `data`
 * frames), never times out a running request (watches, `logs -f`), and carries protocol upgrades
 * (SPDY/3.1 and WebSocket: exec, attach, port-forward) as `upgradeData` frames after a 101. A
 * running request ends when its credential stops being valid (open-streams.ts). What the agent
 * answers is checked before it reaches the client: status code, header names and values (no line
 * breaks), hop-by-hop headers removed, a refused upgrade's body bounded.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { anyPack, type Any } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import http, { type IncomingMessage, type ServerResponse } from "node:http";
import http2, { type Http2ServerRequest, type Http2ServerResponse, type SecureServerOptions } from "node:http2";
import type { AddressInfo, Socket } from "node:net";
import type { Duplex } from "node:stream";
import pino, { type Logger } from "pino";
import client, { Registry } from "prom-client";
import {
  HttpRequestSchema,
  HttpResponseSchema,
  type HttpResponse,
  type HttpResponse_Header,
} from "../gen/gitlab/agent/grpctool/grpctool_pb.js";
import { HeaderExtraSchema } from "../gen/gitlab/agent/kubernetes_api/rpc/rpc_pb.js";
import { ValuesSchema } from "../gen/gitlab/agent/prototool/prototool_pb.js";
import type { PlatformClient } from "../platform/platform-client.js";
import type { ServerTunnel, TunnelCall } from "../tunnel/server/server-tunnel.js";
import type { TunnelRegistry } from "../tunnel/server/tunnel-registry.js";
import {
  MAKE_REQUEST_METHOD,
  canonicalHeaderName,
  isFinalStatusCode,
  mapToNodeHeaders,
  nodeHeadersToMap,
  queryToMap,
  rawResponseHead,
  safeReasonPhrase,
} from "./http-codec.js";
import { isImpersonationHeader } from "./impersonation.js";
import { K8sProxyError, statusHeaders, statusJson, toK8sProxyError } from "./k8s-status.js";
import { OpenStreams, type EndStream } from "./open-streams.js";
import { ProxyAuthenticator, type ProxyAuthorization } from "./proxy-auth.js";
import { ESCAPED_PATH_HEADER, RequestPathError, checkRawPath, splitRequestTarget } from "./request-path.js";
import { streamWindowBytes, widenConnectionWindow } from "../util/http2-windows.js";
import { drained } from "../util/drained.js";
import {
  applyHttp1Limits,
  http2SettingsWithLimits,
  resolveListenerLimits,
  superviseSessionWithLimits,
  type ListenerLimits,
} from "../transport/listener-limits.js";
import { resetStream } from "../transport/request-guard.js";
import { hostPort } from "../util/host-port.js";

/** The proxy's defaults of the limits every listener has. */
export const K8S_PROXY_LIMITS = {
  maxConnections: 10_000,
  // kube-apiserver's own default (--http2-max-streams-per-connection): kubectl multiplexes watches.
  maxConcurrentStreams: 1_000,
  headersTimeoutMs: 20_000,
  idleTimeoutMs: 600_000,
} as const;

/**
 * Options of {@link createKubernetesApiProxy}. The limits ({@link ListenerLimits}) default to
 * {@link K8S_PROXY_LIMITS}: at most 10 000 connections and 1 000 concurrent HTTP/2 streams per
 * connection; 20 000 ms for a TLS handshake and a request head (HTTP/2: the first stream); a
 * connection with no request in progress closed after 600 000 ms (10 min). A request in progress
 * (a watch, `logs -f`, an exec) is never cut by them.
 */
export interface KubernetesApiProxyOptions extends ListenerLimits {
  registry: TunnelRegistry;
  platform: PlatformClient;
  /** Default: silent. Audit lines are logged at info level. */
  logger?: Logger;
  /** Default "127.0.0.1". */
  host?: string;
  /** Default 8154 (GitLab KAS's port); 0 picks a free port. */
  port?: number;
  /** With TLS the proxy speaks HTTP/2 and HTTP/1.1 (ALPN); without, HTTP/1.1. */
  tls?: Pick<SecureServerOptions, "cert" | "key" | "ca" | "pfx" | "passphrase">;
  /** Path prefix kubectl's server URL carries; stripped before forwarding. Default "/". */
  urlPathPrefix?: string;
  /** How long a successful job-token / PAT authorization is reused. Default 5 000 ms. */
  authCacheTtlMs?: number;
  /** How long a request waits for an idle tunnel of the agent before answering 503. Default 10 000 ms. */
  tunnelWaitMs?: number;
  /** Where `kas_k8s_proxy_requests_total` is registered. Default: a private registry. */
  metrics?: Registry;
  /** Largest request or response frame. Default 1 MiB (bodies are split into frames of at most this). */
  maxFrameBytes?: number;
  /**
   * How often the credential of each running request (watch, `logs -f`, exec, port-forward…) is
   * authorized again, as a backstop to the platform's revocation feed: a refusal or another
   * identity ends its requests. Default 60 000 ms; 0 turns it off.
   */
  reauthorizeIntervalMs?: number;
  /**
   * Largest body of an agent's answer refusing an upgrade (exec, attach, port-forward refused by
   * RBAC and the like: a Kubernetes Status), which the proxy holds to answer with its length.
   * Beyond it the client gets 502. Default 65 536 bytes.
   */
  maxUpgradeRefusalBytes?: number;
}

export interface KubernetesApiProxy {
  address: AddressInfo;
  /** "http://host:port/prefix" or "https://…": the server of generated kubeconfigs. */
  url: string;
  /** Stops accepting, lets requests in flight run up to `graceMs` (default 10 000), then ends them. */
  close(graceMs?: number): Promise<void>;
}

type AnyRequest = IncomingMessage | Http2ServerRequest;
type AnyResponse = ServerResponse | Http2ServerResponse;

export async function createKubernetesApiProxy(options: KubernetesApiProxyOptions): Promise<KubernetesApiProxy> {
  const logger = options.logger ?? pino({ level: "silent" });
  const prefix = normalizePrefix(options.urlPathPrefix ?? "/");
  const tunnelWaitMs = options.tunnelWaitMs ?? 10_000;
  const maxFrameBytes = options.maxFrameBytes ?? 1024 * 1024;
  const maxUpgradeRefusalBytes = options.maxUpgradeRefusalBytes ?? 64 * 1024;
  const auth = new ProxyAuthenticator({ platform: options.platform, cacheTtlMs: options.authCacheTtlMs });
  const openStreams = new OpenStreams({ auth, platform: options.platform, logger, reauthorizeIntervalMs: options.reauthorizeIntervalMs ?? 60_000 });
  const metricsRegistry = options.metrics ?? new Registry();
  const requestsTotal =
    (metricsRegistry.getSingleMetric("kas_k8s_proxy_requests_total") as client.Counter<"code"> | undefined) ??
    new client.Counter({
      name: "kas_k8s_proxy_requests_total",
      help: "Requests to the Kubernetes API proxy, by HTTP status code answered.",
      labelNames: ["code"] as const,
      registers: [metricsRegistry],
    });

  const shutdown = new AbortController();
  const escapedPathHeader = ESCAPED_PATH_HEADER.toLowerCase();
  const calls = new Set<TunnelCall>();
  const sockets = new Set<Socket | Duplex>();

  // ---------------------------------------------------------------- shared steps

  interface Started {
    authz: ProxyAuthorization;
    call: TunnelCall;
    method: string;
    path: string;
  }

  /**
   * One request's life. `signal` aborts when the client goes (`clientGone`) or when its credential
   * stops being valid (`endedBy`, the Status to answer with when nothing was answered yet).
   */
  class RequestLife {
    private readonly controller = new AbortController();
    readonly signal = this.controller.signal;
    clientGone = false;
    endedBy: K8sProxyError | undefined;
    /** Stops watching the credential (set once authorized). */
    release: () => void = () => {};
    readonly end: EndStream = (reason) => {
      if (this.signal.aborted) return;
      this.endedBy = reason;
      this.controller.abort(reason);
    };
    clientLeft(): void {
      if (this.signal.aborted) return;
      this.clientGone = true;
      this.controller.abort(new Error("client went away"));
    }
    /** Why the request stops, for the tunnel call and errors. */
    reasonError(): K8sProxyError {
      return this.endedBy ?? new K8sProxyError(499, "client went away");
    }
  }

  /** Requests waiting for a tunnel, by the abort of their wait: close() ends them. */
  const waiting = new Set<AbortController>();

  async function acquireTunnel(agentId: number, signal: AbortSignal): Promise<ServerTunnel> {
    if (shutdown.signal.aborted) throw new ConnectError("KAS is shutting down", Code.Unavailable);
    const wait = new AbortController();
    const onAbort = () => wait.abort(signal.reason);
    // A client that left during authorization has an aborted signal already: "abort" will not fire.
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
    // One timer, cleared once a tunnel is found (AbortSignal.timeout()/any() per request would keep
    // a timer and listeners alive for the whole wait period). It can only fire while the registry
    // still holds the waiter, so it never cancels a call that got a tunnel.
    const timer = setTimeout(() => wait.abort(), tunnelWaitMs);
    waiting.add(wait);
    try {
      return await options.registry.acquire(agentId, MAKE_REQUEST_METHOD, wait.signal);
    } finally {
      clearTimeout(timer);
      waiting.delete(wait);
      signal.removeEventListener("abort", onAbort);
    }
  }

  /** Authentication, checks, tunnel, header frame. Throws K8sProxyError. */
  async function begin(req: AnyRequest, upgrade: boolean, life: RequestLife): Promise<Started> {
    const signal = life.signal;
    const method = (req.method ?? "GET").toUpperCase();
    const target = splitRequestTarget(req.url ?? "/");
    if (!target) throw new K8sProxyError(400, "the request target must be a path");
    // The prefix is matched on the raw path: no decoding or dot-segment resolution before it.
    if (!target.rawPath.startsWith(prefix) && `${target.rawPath}/` !== prefix) throw new K8sProxyError(404, `no such path: expected prefix ${prefix}`);
    let path;
    try {
      path = checkRawPath(`/${target.rawPath.slice(prefix.length)}`.replace(/^\/+/, "/"));
    } catch (e) {
      if (e instanceof RequestPathError) throw new K8sProxyError(400, e.message);
      throw e;
    }
    const authorization = headerValue(req.headers.authorization);
    const authz = await auth.authorize(authorization, signal);
    const offending = Object.keys(req.headers).find(isImpersonationHeader);
    if (offending) throw new K8sProxyError(400, `impersonation is not allowed through the proxy (header ${canonicalHeaderName(offending)})`);
    // From here on a revocation, the credential's expiry or a refused re-authorization ends it.
    life.release = openStreams.track(authorization!, authz, life.end);
    if (life.endedBy) throw life.endedBy;

    // The wait ends with the client, after tunnelWaitMs, or at shutdown.
    let tunnel;
    try {
      tunnel = await acquireTunnel(authz.agentId, signal);
    } catch (e) {
      if (signal.aborted && !shutdown.signal.aborted) throw life.reasonError();
      const ce = ConnectError.from(e);
      throw new K8sProxyError(503, ce.code === Code.Unavailable ? ce.rawMessage : `agent ${authz.agentId}: ${ce.rawMessage}`);
    }
    const call = tunnel.start(MAKE_REQUEST_METHOD, {});
    calls.add(call);
    const headers = nodeHeadersToMap(req.headers, { drop: (n) => n === "authorization" || n === "cookie" || n === escapedPathHeader, keepUpgrade: upgrade });
    if (path.escaped !== undefined) headers[ESCAPED_PATH_HEADER] = create(ValuesSchema, { value: [path.escaped] });
    const header = create(HttpRequestSchema, {
      message: {
        case: "header",
        value: {
          request: {
            method,
            header: headers,
            urlPath: path.decoded,
            query: queryToMap(new URLSearchParams(target.rawQuery)),
          },
          extra: headerExtra(authz),
          ...(req.headers["content-length"] !== undefined && /^\d+$/.test(String(req.headers["content-length"]))
            ? { contentLength: BigInt(String(req.headers["content-length"])) }
            : {}),
        },
      },
    });
    await call.send(toBinary(HttpRequestSchema, header));
    return { authz, call, method, path: path.decoded };
  }

  /** The agent's header map as Node headers, invalid entries dropped and logged. */
  function agentHeaders(started: Started, map: Parameters<typeof mapToNodeHeaders>[0], options: { forHttp2?: boolean; keepUpgrade?: boolean }) {
    return mapToNodeHeaders(map, {
      ...options,
      onInvalid: (name) => logger.warn({ agentId: started.authz.agentId, header: name }, "k8s proxy: dropped an invalid header from the agent's answer"),
    });
  }

  function audit(started: Started | undefined, req: AnyRequest, code: number, startedAt: number, error?: K8sProxyError): void {
    requestsTotal.inc({ code: String(code) });
    const c = started?.authz.caller;
    logger.info(
      {
        caller: c?.kind,
        ...(c?.kind === "ci_job" ? { jobId: c.jobId, projectId: c.projectId } : {}),
        ...(c?.kind === "user" ? { userId: c.userId, username: c.username } : {}),
        agentId: started?.authz.agentId,
        impersonating: started?.authz.impersonation.username || undefined,
        method: req.method,
        path: started?.path ?? splitRequestTarget(req.url ?? "/")?.rawPath,
        status: code,
        durationMs: Date.now() - startedAt,
        ...(error ? { error: error.message } : {}),
      },
      "k8s proxy request",
    );
  }

  /** Sends `chunk` as data (or upgradeData) frames no larger than maxFrameBytes. */
  async function sendChunk(call: TunnelCall, chunk: Uint8Array, kind: "data" | "upgradeData"): Promise<void> {
    for (let off = 0; off < chunk.length; off += maxFrameBytes) {
      const data = chunk.subarray(off, Math.min(chunk.length, off + maxFrameBytes));
      await call.send(toBinary(HttpRequestSchema, create(HttpRequestSchema, { message: { case: kind, value: { data } } })));
    }
  }

  async function sendTrailer(call: TunnelCall): Promise<void> {
    await call.send(toBinary(HttpRequestSchema, create(HttpRequestSchema, { message: { case: "trailer", value: {} } })));
  }

  /** Decoded HttpResponse frames of the call; ends with the call, throws its error. */
  async function* responses(call: TunnelCall): AsyncGenerator<HttpResponse["message"]> {
    for await (const event of call.events) {
      if (event.kind === "message") yield fromBinary(HttpResponseSchema, event.data).message;
      else if (event.kind === "end" && event.error) throw event.error;
    }
  }

  // ---------------------------------------------------------------- plain requests

  async function handleRequest(req: AnyRequest, res: AnyResponse): Promise<void> {
    const startedAt = Date.now();
    const isHttp2 = req.httpVersionMajor === 2;
    const life = new RequestLife();
    let finished = false;
    res.on("close", () => {
      if (!finished) life.clientLeft();
    });
    let started: Started | undefined;
    let code = 0;
    try {
      started = await begin(req, false, life);
      const call = started.call;
      life.signal.addEventListener("abort", () => call.cancel(new ConnectError(life.reasonError().message, Code.Canceled)), { once: true });
      // The request body, concurrently with the response (a watch answers before any body ends).
      // Once the call has ended (an early answer, such as the API server's 413 to a body too
      // large), the rest of the body is read and dropped, so the client gets that answer rather
      // than a reset connection; how the call ended is the response loop's to tell.
      const body = (async () => {
        let sending = true;
        for await (const chunk of req as AsyncIterable<Buffer>) {
          if (!sending) continue;
          try {
            await sendChunk(call, chunk, "data");
          } catch {
            sending = false;
          }
        }
        if (sending) {
          await sendTrailer(call);
          await call.closeSend();
        }
      })().catch(() => {});
      let header: HttpResponse_Header | undefined;
      for await (const msg of responses(call)) {
        if (msg.case === "header") {
          header = msg.value;
          const r = header.response;
          const status = r?.statusCode ?? 0;
          if (!isFinalStatusCode(status)) throw new ConnectError(`agent ${started.authz.agentId} answered with status ${status}`, Code.Internal);
          code = status;
          const headers = agentHeaders(started, r?.header ?? {}, { forHttp2: isHttp2 });
          if (isHttp2) (res as Http2ServerResponse).writeHead(code, headers);
          else (res as ServerResponse).writeHead(code, safeReasonPhrase(r?.status.replace(/^\d+\s*/, "") ?? "") || undefined, headers);
          // Headers go out at once: a watch may not send a byte for minutes.
          (res as ServerResponse).flushHeaders?.();
        } else if (msg.case === "data") {
          if (!header) throw new ConnectError("agent sent data before the response header", Code.Internal);
          if (finished) continue; // after the trailer: a protocol slip, not worth cutting a complete answer
          if (!(res as ServerResponse).write(msg.value.data)) await drained(res);
        } else if (msg.case === "trailer") {
          if (!header) break;
          // The response is complete: answer now, then let the call end normally (leaving the
          // loop here would close the call's events under the tunnel and fail it).
          finished = true;
          res.end();
        }
      }
      if (!header) throw new ConnectError(`agent ${started.authz.agentId} answered no response`, Code.Unavailable);
      if (!finished) {
        finished = true;
        res.end();
      }
      // Answered: what is left of the client's body is only read and dropped, which neither a
      // shutdown nor the credential's end needs to wait for.
      life.release();
      calls.delete(call);
      await body;
      audit(started, req, code, startedAt);
    } catch (e) {
      const err = life.endedBy ?? toK8sProxyError(e);
      started?.call.cancel(new ConnectError(err.message, Code.Canceled));
      if (code === 0) code = life.clientGone ? 499 : err.code;
      if (finished) {
        // The answer was complete (the call failed only after its trailer): leave the connection be.
      } else if (!res.headersSent && !life.clientGone) {
        finished = true;
        const body = statusJson(err.code, err.message, err.reason);
        res.writeHead(err.code, statusHeaders(err.code, body));
        res.end(body);
      } else {
        // Mid-stream: all we can do is cut the response so the client sees it incomplete. Over
        // HTTP/2 with an error code: a bare destroy would reset the stream with NO_ERROR.
        finished = true;
        if (isHttp2) (res as Http2ServerResponse).stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
        else (res as ServerResponse).destroy();
      }
      audit(started, req, code, startedAt, err);
    } finally {
      life.release();
      if (started) calls.delete(started.call);
    }
  }

  // ---------------------------------------------------------------- upgrades (HTTP/1.1 only)

  async function handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const startedAt = Date.now();
    sockets.add(socket);
    const life = new RequestLife();
    socket.on("close", () => {
      sockets.delete(socket);
      life.clientLeft();
    });
    socket.on("error", () => {});
    let started: Started | undefined;
    let code = 0;
    try {
      started = await begin(req, true, life);
      const call = started.call;
      life.signal.addEventListener("abort", () => call.cancel(new ConnectError(life.reasonError().message, Code.Canceled)), { once: true });
      await sendTrailer(call); // an upgrade request has no body
      const it = responses(call)[Symbol.asyncIterator]();
      const first = await it.next();
      if (first.done || first.value.case !== "header") throw new ConnectError(`agent ${started.authz.agentId} answered no response`, Code.Unavailable);
      const r = first.value.value.response;
      const status = r?.statusCode ?? 0;
      if (status !== 101 && !isFinalStatusCode(status)) throw new ConnectError(`agent ${started.authz.agentId} answered with status ${status}`, Code.Internal);
      if (status !== 101) {
        // Refused (RBAC, bad request): answer it as a normal response and close the socket. The
        // body is held to send its length, so it is bounded.
        const chunks: Buffer[] = [];
        let size = 0;
        for (;;) {
          const next = await it.next();
          if (next.done || next.value.case === "trailer") break;
          if (next.value.case !== "data") continue;
          size += next.value.value.data.length;
          if (size > maxUpgradeRefusalBytes) {
            throw new ConnectError(`agent ${started.authz.agentId}'s answer refusing the upgrade exceeds ${maxUpgradeRefusalBytes} bytes`, Code.Internal);
          }
          chunks.push(Buffer.from(next.value.value.data));
        }
        code = status;
        const body = Buffer.concat(chunks);
        const headers = agentHeaders(started, r?.header ?? {}, {});
        for (const name of Object.keys(headers)) if (name.toLowerCase() === "content-length") delete headers[name];
        headers["Content-Length"] = String(body.length);
        headers.Connection = "close";
        socket.end(Buffer.concat([Buffer.from(rawResponseHead(code, r?.status.replace(/^\d+\s*/, "") || http.STATUS_CODES[code] || "", headers)), body]));
        await call.closeSend().catch(() => {});
        call.cancel();
        audit(started, req, code, startedAt);
        return;
      }
      code = 101;
      socket.write(rawResponseHead(101, "Switching Protocols", agentHeaders(started, r?.header ?? {}, { keepUpgrade: true })));
      // Client -> agent, with backpressure: the socket is paused while a frame waits for room.
      const up = (async () => {
        if (head.length > 0) await sendChunk(call, head, "upgradeData");
        for await (const chunk of socket as AsyncIterable<Buffer>) await sendChunk(call, chunk, "upgradeData");
        await call.closeSend();
      })().catch(() => {});
      // Agent -> client.
      for (;;) {
        const next = await it.next();
        if (next.done) break;
        const msg = next.value;
        if (msg.case === "upgradeData") {
          if (!socket.write(msg.value.data)) await drained(socket);
        }
        // "trailer" (end of the 101's empty body) and anything else: keep reading.
      }
      socket.end();
      void up;
      audit(started, req, code, startedAt);
    } catch (e) {
      const err = life.endedBy ?? toK8sProxyError(e);
      started?.call.cancel(new ConnectError(err.message, Code.Canceled));
      if (code === 0) {
        code = life.clientGone ? 499 : err.code;
        if (!life.clientGone && socket.writable) {
          const body = statusJson(err.code, err.message, err.reason);
          socket.end(rawResponseHead(err.code, http.STATUS_CODES[err.code] ?? "Error", { ...statusHeaders(err.code, body), connection: "close" }) + body);
        } else {
          socket.destroy();
        }
      } else {
        socket.destroy();
      }
      audit(started, req, code, startedAt, err);
    } finally {
      life.release();
      if (started) calls.delete(started.call);
    }
  }

  // ---------------------------------------------------------------- servers

  // The handlers answer every failure they know of; these catch the ones they do not, on the one
  // request they happened to.
  const onRequest = (req: AnyRequest, res: AnyResponse) => {
    handleRequest(req, res).catch((err: unknown) => {
      logger.warn({ err, method: req.method }, "k8s proxy: a request failed outside its handler");
      if ("stream" in res) resetStream(res.stream);
      else res.destroy();
    });
  };
  const limits = resolveListenerLimits(options, K8S_PROXY_LIMITS);
  const server = options.tls
    ? http2.createSecureServer(
        {
          ...options.tls,
          allowHTTP1: true,
          settings: http2SettingsWithLimits({ initialWindowSize: streamWindowBytes }, limits),
          handshakeTimeout: limits.headersTimeoutMs,
        },
        onRequest,
      )
    : http.createServer(onRequest);
  server.setTimeout(0);
  // HTTP/1.1 (with TLS or without): connections, request head and keep-alive timeouts; no
  // timeout for a whole request (a watch runs for hours).
  applyHttp1Limits(server, limits);
  if (options.tls) {
    server.on("session", (session: http2.ServerHttp2Session) => {
      // The connection window too (SETTINGS only cover streams): large uploads (kubectl apply/cp)
      // would otherwise move 64 KiB per round trip.
      widenConnectionWindow(session);
      superviseSessionWithLimits(session, limits);
    });
  }
  server.on("upgrade", (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    handleUpgrade(req, socket, head).catch((err: unknown) => {
      logger.warn({ err, method: req.method }, "k8s proxy: an upgrade failed outside its handler");
      socket.destroy();
    });
  });
  server.on("connection", (socket: Socket) => {
    sockets.add(socket);
    socket.setKeepAlive(true, 30_000);
    // Headers are flushed before the body: without this, Nagle + delayed ACK cost ~40 ms a request.
    socket.setNoDelay(true);
    socket.once("close", () => sockets.delete(socket));
  });
  if (options.tls) server.on("secureConnection", (socket: Socket) => sockets.add(socket));

  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(options.port ?? 8154, options.host ?? "127.0.0.1", () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (e) {
    openStreams.close(); // stops watching the platform's feeds
    throw e;
  }
  const address = server.address() as AddressInfo;
  const url = `${options.tls ? "https" : "http"}://${hostPort(address.address, address.port)}${prefix === "/" ? "" : prefix.replace(/\/$/, "")}`;
  logger.info({ url }, "Kubernetes API proxy listening");

  let closing: Promise<void> | undefined;
  return {
    address,
    url,
    close(graceMs = 10_000) {
      closing ??= (async () => {
        const closed = new Promise<void>((resolve) => server.close(() => resolve()));
        (server as http.Server).closeIdleConnections?.();
        const deadline = Date.now() + graceMs;
        while (calls.size > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
        shutdown.abort();
        for (const wait of waiting) wait.abort();
        for (const call of calls) call.cancel(new ConnectError("KAS is shutting down", Code.Unavailable));
        openStreams.close();
        for (const socket of sockets) socket.destroy();
        (server as http.Server).closeAllConnections?.();
        await closed;
      })();
      return closing;
    },
  };
}

function normalizePrefix(prefix: string): string {
  let p = prefix.startsWith("/") ? prefix : `/${prefix}`;
  if (!p.endsWith("/")) p += "/";
  return p;
}

function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/** The request header's `extra` (the impersonation), packed once per authorization (cached by ProxyAuthenticator). */
const packedExtras = new WeakMap<ProxyAuthorization, Any>();

function headerExtra(authz: ProxyAuthorization): Any {
  let extra = packedExtras.get(authz);
  if (!extra) packedExtras.set(authz, (extra = anyPack(HeaderExtraSchema, create(HeaderExtraSchema, { impConfig: authz.impersonation }))));
  return extra;
}


