/**
 * What every request through the Kubernetes API proxy goes through, plain or upgrade: its life
 * (client gone, credential ended), authentication and checks, the tunnel call and its header
 * frame, the body frames both ways, and the audit line.
 */
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { anyPack, type Any } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import type { Logger } from "pino";
import type client from "prom-client";
import { HttpRequestSchema, HttpResponseSchema, type HttpResponse } from "../../../gen/gitlab/agent/grpctool/grpctool_pb.js";
import { HeaderExtraSchema } from "../../../gen/gitlab/agent/kubernetes_api/rpc/rpc_pb.js";
import { ValuesSchema } from "../../../gen/gitlab/agent/prototool/prototool_pb.js";
import { kasShuttingDownError } from "../../../grpc/status-errors.js";
import { canonicalHeaderName, mapToNodeHeaders, nodeHeadersToMap, queryToMap } from "../../../http/http-codec.js";
import { ESCAPED_PATH_HEADER, RequestPathError, checkRawPath, splitRequestTarget } from "../../../http/request-path.js";
import type { KasAuditLog } from "../../../kas/audit-log.js";
import type { UsageMetrics } from "../../../kas/usage-metrics.js";
import type { AuditActor } from "../../../platform-client/audit-events.js";
import { isWatchQuery, kubernetesRequestAttributes, kubernetesRoute } from "../request-attributes.js";
import {
  ATTR_AGENT_ID,
  ATTR_AGENT_MODULE,
  ATTR_CALLER_KIND,
  ATTR_GRPC_STATUS,
  ATTR_K8S_NAMESPACE,
  ATTR_K8S_RESOURCE,
  ATTR_K8S_VERB,
  rpcSpan,
} from "../../../tracing/semconv.js";
import { SpanKind, SpanStatusCode, recordedTraceId, type Span, type Tracing } from "../../../tracing/tracing.js";
import type { MetaMap } from "../../../util/metadata.js";
import type { AgentCalls } from "../../../tunnel/server/agent-calls.js";
import type { TunnelCall } from "../../../tunnel/server/server-tunnel.js";
import { isImpersonationHeader } from "../impersonation.js";
import { MAKE_REQUEST_METHOD } from "../rpc.js";
import { K8sProxyError } from "./k8s-status.js";
import type { EndStream, OpenStreams } from "./open-streams.js";
import type { ProxyAuthenticator, ProxyAuthorization } from "./proxy-auth.js";

export type AnyRequest = IncomingMessage | Http2ServerRequest;
export type AnyResponse = ServerResponse | Http2ServerResponse;

/** A request once authorized, with its tunnel call. */
export interface Started {
  authz: ProxyAuthorization;
  call: TunnelCall;
  method: string;
  path: string;
}

/**
 * One request's life. `signal` aborts when the client goes (`clientGone`) or when its credential
 * stops being valid (`endedBy`, the Status to answer with when nothing was answered yet).
 */
export class RequestLife {
  private readonly controller = new AbortController();
  readonly signal: AbortSignal = this.controller.signal;
  clientGone = false;
  endedBy: K8sProxyError | undefined;
  /** Stops watching the credential (set once authorized). */
  release: () => void = () => {};
  /** The request's span (HTTP server) and its tunnel call's (RPC client), started by ProxyRequests.begin. */
  span: Span | undefined;
  callSpan: Span | undefined;
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
  /** Cancels `call` when the request stops (client gone, credential ended). */
  cancelOnEnd(call: TunnelCall): void {
    this.signal.addEventListener("abort", () => call.cancel(new ConnectError(this.reasonError().message, Code.Canceled)), { once: true });
  }
}

export interface ProxyRequestsOptions {
  agentCalls: AgentCalls;
  auth: ProxyAuthenticator;
  openStreams: OpenStreams;
  logger: Logger;
  requestsTotal: client.Counter<"code">;
  /** Usage counters for the platform (GitLab's k8s_api_proxy_request* events); none when unset. */
  usage?: UsageMetrics;
  /** The audit trail: every request, allowed or refused; none when unset. */
  audit?: KasAuditLog;
  /** Spans of the requests and their tunnel calls; `traceparent` goes down the tunnel. */
  tracing: Tracing;
  /** Normalized: starts and ends with "/". */
  prefix: string;
  tunnelWaitMs: number;
  maxFrameBytes: number;
  maxUpgradeRefusalBytes: number;
}

const escapedPathHeader = ESCAPED_PATH_HEADER.toLowerCase();
/** The tunnel call's span name and RPC attributes. */
const MAKE_REQUEST_RPC = rpcSpan(MAKE_REQUEST_METHOD);

/** The proxy's requests in flight and the steps they share; `close` ends them all. */
export class ProxyRequests {
  /** Tunnel calls in flight. */
  readonly calls = new Set<TunnelCall>();
  /** Requests waiting for a tunnel, by the abort of their wait. */
  private readonly waiting = new Set<AbortController>();
  private readonly shutdown = new AbortController();
  /** Requests' credentials once authorized (gone with the request). */
  private readonly authorized = new WeakMap<AnyRequest, ProxyAuthorization>();

  constructor(readonly options: ProxyRequestsOptions) {}

  get logger(): Logger {
    return this.options.logger;
  }

  /** Authentication, checks, tunnel, header frame. Throws K8sProxyError. */
  async begin(req: AnyRequest, upgrade: boolean, life: RequestLife): Promise<Started> {
    const { prefix, auth, openStreams } = this.options;
    const signal = life.signal;
    const method = (req.method ?? "GET").toUpperCase();
    // The client's traceparent (kubectl, another proxy) is the parent.
    const tracing = this.options.tracing;
    life.span = tracing.startSpan(method, SpanKind.SERVER, tracing.fromNodeHeaders(req.headers));
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
    // Who it is, for the audit trail, also when a later check refuses the request.
    this.authorized.set(req, authz);
    const offending = Object.keys(req.headers).find(isImpersonationHeader);
    if (offending) throw new K8sProxyError(400, `impersonation is not allowed through the proxy (header ${canonicalHeaderName(offending)})`);
    if (this.options.usage) countUsage(this.options.usage, authz);
    // From here on a revocation, the credential's expiry or a refused re-authorization ends it.
    life.release = openStreams.track(authorization!, authz, life.end);
    if (life.endedBy) throw life.endedBy;

    // The wait ends with the client, after tunnelWaitMs, or at shutdown.
    const callSpan = (life.callSpan = tracing.startSpan(MAKE_REQUEST_RPC.name, SpanKind.CLIENT, tracing.withSpan(life.span)));
    if (callSpan.isRecording()) callSpan.setAttributes({ ...MAKE_REQUEST_RPC.attributes, [ATTR_AGENT_ID]: authz.agentId });
    // The agent's span is a child of the call's: its context rides in RequestInfo's metadata.
    const meta: MetaMap = {};
    tracing.injectMeta(callSpan, meta);
    let call;
    try {
      call = await this.startCall(authz.agentId, meta, signal);
    } catch (e) {
      if (signal.aborted && !this.shutdown.signal.aborted) throw life.reasonError();
      const ce = ConnectError.from(e);
      throw new K8sProxyError(503, ce.code === Code.Unavailable ? ce.rawMessage : `agent ${authz.agentId}: ${ce.rawMessage}`);
    }
    this.calls.add(call);
    const headers = nodeHeadersToMap(req.headers, { drop: (n) => n === "authorization" || n === "cookie" || n === escapedPathHeader, keepUpgrade: upgrade });
    if (path.escaped !== undefined) headers[ESCAPED_PATH_HEADER] = create(ValuesSchema, { value: [path.escaped] });
    // The API server's parent: the call's span when recording (the agent's own when it traces too).
    tracing.injectMeta(callSpan, headers);
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

  /** Starts MakeRequest on one of the agent's tunnels, waiting for one at most tunnelWaitMs. */
  private async startCall(agentId: number, meta: MetaMap, signal: AbortSignal): Promise<TunnelCall> {
    if (this.shutdown.signal.aborted) throw kasShuttingDownError();
    const wait = new AbortController();
    const onAbort = () => wait.abort(signal.reason);
    // A client that left during authorization has an aborted signal already: "abort" will not fire.
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
    // One timer, cleared once a tunnel is found (AbortSignal.timeout()/any() per request would keep
    // a timer and listeners alive for the whole wait period). It can only fire while the registry
    // still holds the waiter, so it never cancels a call that got a tunnel.
    const timer = setTimeout(() => wait.abort(), this.options.tunnelWaitMs);
    this.waiting.add(wait);
    try {
      return await this.options.agentCalls.start(agentId, MAKE_REQUEST_METHOD, meta, wait.signal);
    } finally {
      clearTimeout(timer);
      this.waiting.delete(wait);
      signal.removeEventListener("abort", onAbort);
    }
  }

  /** The request is over: its call no longer counts as in flight, its credential is not watched. */
  finished(started: Started | undefined, life: RequestLife): void {
    life.release();
    if (started) this.calls.delete(started.call);
  }

  /** The agent's header map as Node headers, invalid entries dropped and logged. */
  agentHeaders(started: Started, map: Parameters<typeof mapToNodeHeaders>[0], options: { forHttp2?: boolean; keepUpgrade?: boolean }) {
    return mapToNodeHeaders(map, {
      ...options,
      onInvalid: (name) => this.logger.warn({ agentId: started.authz.agentId, header: name }, "k8s proxy: dropped an invalid header from the agent's answer"),
    });
  }

  audit(life: RequestLife, started: Started | undefined, req: AnyRequest, code: number, startedAt: number, error?: K8sProxyError): void {
    this.options.requestsTotal.inc({ code: String(code) });
    const c = started?.authz.caller;
    const traceId = recordedTraceId(life.span);
    this.endSpans(life, started, req, code, error);
    try {
      this.options.audit?.record(this.auditEvent(started, req, code, startedAt, traceId, error));
    } catch (err) {
      // The answer has gone out; the audit trail must not take the request down with it.
      this.logger.error({ err }, "k8s proxy: cannot record the audit event");
    }
    this.logger.info(
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
        ...(traceId ? { traceId } : {}),
        ...(error ? { error: error.message } : {}),
      },
      "k8s proxy request",
    );
  }

  /**
   * Ends the request's spans (once recorded: the HTTP status, the agent, the Kubernetes verb and
   * resource; never a header or a credential).
   */
  private endSpans(life: RequestLife, started: Started | undefined, req: AnyRequest, code: number, error?: K8sProxyError): void {
    const { span, callSpan } = life;
    if (callSpan) {
      if (callSpan.isRecording()) {
        // The call's own failure (the agent gone, cancelled), not the HTTP answer it carried.
        const callFailed = error !== undefined;
        callSpan.setAttribute(ATTR_GRPC_STATUS, callFailed ? (code === 499 ? Code.Canceled : Code.Unavailable) : 0);
        if (callFailed) callSpan.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
      }
      callSpan.end();
    }
    if (!span) return;
    if (span.isRecording()) {
      const { path, method, attrs } = this.requestAttributes(started, req);
      const authz = started?.authz ?? this.authorized.get(req);
      const route = kubernetesRoute(path);
      span.updateName(`${method} ${route}`);
      span.setAttributes({
        "http.request.method": method,
        "http.route": route,
        "url.path": path,
        "url.scheme": "encrypted" in req.socket ? "https" : "http",
        "network.protocol.version": req.httpVersionMajor === 2 ? "2" : req.httpVersion,
        "http.response.status_code": code,
        [ATTR_AGENT_MODULE]: "kubernetes_api",
        [ATTR_K8S_VERB]: attrs.verb,
        ...(attrs.resource ? { [ATTR_K8S_RESOURCE]: attrs.resource } : {}),
        ...(attrs.namespace ? { [ATTR_K8S_NAMESPACE]: attrs.namespace } : {}),
        ...(authz ? { [ATTR_AGENT_ID]: authz.agentId, [ATTR_CALLER_KIND]: authz.caller.kind } : {}),
        ...(typeof req.headers["user-agent"] === "string" ? { "user_agent.original": req.headers["user-agent"] } : {}),
        ...(req.socket.remoteAddress ? { "client.address": req.socket.remoteAddress } : {}),
      });
      // As HTTP server spans do: a 5xx is the server's error, a 4xx the client's.
      if (code >= 500) {
        span.setAttribute("error.type", String(code));
        span.setStatus({ code: SpanStatusCode.ERROR, message: error?.message });
      }
    }
    span.end();
  }

  /** The request's path (after the prefix), method and Kubernetes attributes, also for a refused request. */
  private requestAttributes(started: Started | undefined, req: AnyRequest) {
    const target = splitRequestTarget(req.url ?? "/");
    const path = started?.path ?? `/${(target?.rawPath ?? "").slice(this.options.prefix.length)}`.replace(/^\/+/, "/");
    const method = (req.method ?? "GET").toUpperCase();
    const upgrade = req.headers.upgrade !== undefined || req.headers[":protocol"] !== undefined;
    const watch = isWatchQuery(new URLSearchParams(target?.rawQuery ?? "").get("watch"));
    return { path, method, attrs: kubernetesRequestAttributes(method, path, { upgrade, watch }) };
  }

  /** The request as the audit trail records it: who, which agent, as whom, what, the answer. Never a credential. */
  private auditEvent(started: Started | undefined, req: AnyRequest, code: number, startedAt: number, traceId: string | null, error?: K8sProxyError) {
    const { path, method, attrs } = this.requestAttributes(started, req);
    const authz = started?.authz ?? this.authorized.get(req);
    const imp = authz?.impersonation;
    return {
      kind: "k8s_api_request" as const,
      at: new Date(startedAt).toISOString(),
      agent_id: authz?.agentId ?? credentialAgentId(req.headers.authorization),
      actor: authz ? auditActor(authz.caller) : { kind: "refused" as const, credential: credentialKind(req.headers.authorization) },
      impersonated: imp?.username ? { username: imp.username, groups: [...imp.groups] } : null,
      method,
      path,
      ...attrs,
      status: code,
      duration_ms: Date.now() - startedAt,
      error: error?.message ?? null,
      trace_id: traceId,
    };
  }

  /** Sends `chunk` as data (or upgradeData) frames no larger than maxFrameBytes. */
  async sendChunk(call: TunnelCall, chunk: Uint8Array, kind: "data" | "upgradeData"): Promise<void> {
    const { maxFrameBytes } = this.options;
    for (let off = 0; off < chunk.length; off += maxFrameBytes) {
      const data = chunk.subarray(off, Math.min(chunk.length, off + maxFrameBytes));
      await call.send(toBinary(HttpRequestSchema, create(HttpRequestSchema, { message: { case: kind, value: { data } } })));
    }
  }

  async sendTrailer(call: TunnelCall): Promise<void> {
    await call.send(toBinary(HttpRequestSchema, create(HttpRequestSchema, { message: { case: "trailer", value: {} } })));
  }

  /** Ends every request: waiting ones stop waiting, running calls are cancelled with UNAVAILABLE. */
  close(): void {
    this.shutdown.abort();
    for (const wait of this.waiting) wait.abort();
    for (const call of this.calls) call.cancel(kasShuttingDownError());
  }
}

/** Decoded HttpResponse frames of the call; ends with the call, throws its error. */
export async function* responses(call: TunnelCall): AsyncGenerator<HttpResponse["message"]> {
  for await (const event of call.events) {
    if (event.kind === "message") yield fromBinary(HttpResponseSchema, event.data).message;
    else if (event.kind === "end" && event.error) throw event.error;
  }
}

/**
 * The body of an answer that refused an upgrade, up to its trailer: held whole (its length is
 * sent), so bounded; undefined when it exceeds `maxBytes`.
 */
export async function readRefusalBody(it: AsyncIterator<HttpResponse["message"]>, maxBytes: number): Promise<Buffer | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for (;;) {
    const next = await it.next();
    if (next.done || next.value.case === "trailer") break;
    if (next.value.case !== "data") continue;
    size += next.value.value.data.length;
    if (size > maxBytes) return undefined;
    chunks.push(Buffer.from(next.value.value.data));
  }
  return Buffer.concat(chunks);
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

/**
 * GitLab KAS's usage events of an authorized proxy request: every request, and by access
 * (ci: a CI job; pat: a personal access token; user: a session), with the distinct users and agents.
 */
function countUsage(usage: UsageMetrics, authz: ProxyAuthorization): void {
  const c = authz.caller;
  const via = c.kind === "ci_job" ? "ci" : c.accessType === "personal_access_token" ? "pat" : "user";
  usage.inc("k8s_api_proxy_request");
  usage.inc(`k8s_api_proxy_requests_via_${via}_access`);
  usage.addUnique(`k8s_api_proxy_requests_unique_users_via_${via}_access`, c.userId);
  usage.addUnique(`k8s_api_proxy_requests_unique_agents_via_${via}_access`, authz.agentId);
  if (c.kind === "ci_job") usage.addUnique("agent_users_using_ci_tunnel", c.userId);
}

function auditActor(c: ProxyAuthorization["caller"]): AuditActor {
  return c.kind === "ci_job"
    ? { kind: "ci_job", user_id: c.userId, username: c.username, job_id: c.jobId, project_id: c.projectId, pipeline_id: c.pipelineId }
    : { kind: "user", user_id: c.userId, username: c.username, access_type: c.accessType };
}

/** The kind of a refused credential (`ci`, `pat`; else `other`, or `none`), by its known prefix only: nothing of its secret part. */
function credentialKind(authorization: string | string[] | undefined): string {
  const value = headerValue(authorization);
  if (!value) return "none";
  return /^Bearer\s+(ci|pat):/.exec(value)?.[1] ?? "other";
}

/** The agent id a credential names (`ci:<agent id>:…`, `pat:<agent id>:…`); null when none. */
function credentialAgentId(authorization: string | string[] | undefined): number | null {
  const m = /^Bearer\s+(?:ci|pat):(\d{1,15}):/.exec(headerValue(authorization) ?? "");
  return m ? Number(m[1]) : null;
}
