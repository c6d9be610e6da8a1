/**
 * The agent half of the Kubernetes API proxy: serves `gitlab.agent.kubernetes_api.rpc.KubernetesApi/
 * MakeRequest` through the tunnel and forwards each request to the cluster's API server with the
 * agent's own credentials (a kubeconfig or the in-cluster ServiceAccount), adding Kubernetes
 * impersonation headers from the request's `HeaderExtra.imp_config` so that cluster RBAC decides.
 * Bodies stream both ways; a 101 answer (exec, attach, port-forward) switches both directions to
 * `upgradeData` frames over the raw connection. Once the API server has answered, its answer is
 * what the call reports, even if sending the rest of the request body fails (the API server may
 * answer early, e.g. 413 to a body too large, and close the connection while it is still sent).
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import http, { type IncomingMessage, type OutgoingHttpHeaders } from "node:http";
import https from "node:https";
import type { Duplex } from "node:stream";
import type { KubeConfig } from "@kubernetes/client-node";
import pino, { type Logger } from "pino";
import client, { type Registry } from "prom-client";
import type { AgentModule } from "../../../agent/agent-module.js";
import type { HttpResponseSchema} from "../../../gen/gitlab/agent/grpctool/grpctool_pb.js";
import { type HttpRequest, type HttpRequest_Header } from "../../../gen/gitlab/agent/grpctool/grpctool_pb.js";
import { HeaderExtraSchema, KubernetesApi, type ImpersonationConfig } from "../../../gen/gitlab/agent/kubernetes_api/rpc/rpc_pb.js";
import { ValuesSchema } from "../../../gen/gitlab/agent/prototool/prototool_pb.js";
import { AsyncQueue } from "../../../util/async-queue.js";
import { canonicalHeaderName, connectionOptions, isHopByHop, mapToNodeHeaders, mapToQueryString } from "../../../http/http-codec.js";
import { impersonationHeaders, isEmptyImpersonation, isImpersonationHeader } from "../impersonation.js";
import { ESCAPED_PATH_HEADER, RequestPathError, pathForApiServer } from "../../../http/request-path.js";
import { drained } from "../../../util/drained.js";
import { isWatchQuery, kubernetesRequestAttributes } from "../request-attributes.js";
import { ATTR_AGENT_MODULE, ATTR_K8S_NAMESPACE, ATTR_K8S_RESOURCE, ATTR_K8S_VERB } from "../../../tracing/semconv.js";
import { SpanKind, SpanStatusCode, type Tracing } from "../../../tracing/tracing.js";

export interface KubernetesApiAgentModuleOptions {
  /**
   * Where the cluster credentials come from: a kubeconfig file path, a loaded `KubeConfig`, or
   * "in-cluster" (the pod's ServiceAccount). Default: in-cluster when KUBERNETES_SERVICE_HOST is
   * set, else $KUBECONFIG or ~/.kube/config.
   */
  kubeconfig?: string | KubeConfig;
  /** Context of the kubeconfig to use. Default: its current context. */
  context?: string;
  logger?: Logger;
  /** Largest response frame; bigger chunks are split. Default 1 MiB. */
  maxFrameBytes?: number;
  /** How long credentials read from the kubeconfig (files, tokens) are reused. Default 10 000 ms. */
  credentialTtlMs?: number;
}

type ResponseInit = MessageInitShape<typeof HttpResponseSchema>;

/** Loads the cluster credentials and returns the module serving KubernetesApi through the tunnel. */
export async function kubernetesApiAgentModule(options: KubernetesApiAgentModuleOptions = {}): Promise<AgentModule> {
  const logger = options.logger ?? pino({ level: "silent" });
  const kc = await loadKubeConfig(options);
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error("kubeconfig has no current cluster");
  const server = new URL(cluster.server);
  const protocol = server.protocol;
  const isHttps = protocol === "https:";
  const maxFrameBytes = options.maxFrameBytes ?? 1024 * 1024;
  const credentialTtlMs = options.credentialTtlMs ?? 10_000;
  const basePath = server.pathname.replace(/\/$/, "");
  const hostname = server.hostname.replace(/^\[|\]$/g, "");
  const port = server.port || (isHttps ? 443 : 80);

  interface Credentials {
    /** TLS options and the Authorization header, as applyToHTTPSOptions leaves them. */
    options: https.RequestOptions;
    /** One keep-alive pool for as long as the TLS material stays the same (none with a proxy URL). */
    agent: http.Agent | undefined;
    expiresAt: number;
  }
  let credentials: Credentials | undefined;
  let refreshing: Promise<Credentials> | undefined;

  /**
   * The agent's credentials, re-read at most every credentialTtlMs (in-cluster tokens rotate;
   * client-node itself re-reads a token file every 60 s). applyToHTTPSOptions reads the CA,
   * certificate and key files and builds an https.Agent on every call, which per request was the
   * largest cost of this module.
   */
  function currentCredentials(): Credentials | Promise<Credentials> {
    if (credentials && credentials.expiresAt > Date.now()) return credentials;
    return (refreshing ??= loadCredentials().finally(() => (refreshing = undefined)));
  }

  async function loadCredentials(): Promise<Credentials> {
    const opts: https.RequestOptions = { headers: {} };
    await kc.applyToHTTPSOptions(opts);
    let agent: http.Agent | undefined;
    if (!cluster!.proxyUrl) {
      const previous = credentials;
      if (previous?.agent && sameTls(previous.options, opts)) {
        agent = previous.agent;
      } else {
        agent = isHttps
          ? new https.Agent({
              keepAlive: true,
              ca: opts.ca,
              cert: opts.cert,
              key: opts.key,
              pfx: opts.pfx,
              passphrase: opts.passphrase,
              servername: opts.servername,
              ...(opts.rejectUnauthorized !== undefined ? { rejectUnauthorized: opts.rejectUnauthorized } : {}),
            })
          : new http.Agent({ keepAlive: true });
        if (previous?.agent) retire(previous.agent);
      }
    } else {
      agent = opts.agent as http.Agent | undefined;
    }
    credentials = { options: opts, agent, expiresAt: Date.now() + credentialTtlMs };
    return credentials;
  }

  /** Request options with the agent's credentials. */
  function requestOptions(c: Credentials, method: string, pathAndQuery: string, headers: OutgoingHttpHeaders): https.RequestOptions {
    const credentialHeaders = (c.options.headers ?? {}) as OutgoingHttpHeaders;
    return {
      // Our keep-alive pool holds the TLS material; a proxy agent takes it from the request.
      ...(cluster!.proxyUrl ? c.options : { auth: c.options.auth }),
      method,
      headers: { ...headers, ...credentialHeaders },
      agent: c.agent,
      protocol,
      hostname,
      port,
      path: basePath + pathAndQuery,
    };
  }

  let metrics: ReturnType<typeof kubernetesApiAgentMetrics> | undefined;
  let tracing: Tracing | undefined;

  const implementation: Partial<ServiceImpl<typeof KubernetesApi>> = {
    makeRequest(requests: AsyncIterable<HttpRequest>, ctx: HandlerContext): AsyncIterable<ResponseInit> {
      const out = new AsyncQueue<ResponseInit>(8);
      void forward(requests, ctx.signal, ctx.requestHeader, out).then(
        () => out.close(),
        (e: unknown) => out.close(ConnectError.from(e)),
      );
      return out;
    },
  };

  async function forward(requests: AsyncIterable<HttpRequest>, signal: AbortSignal, callHeaders: Headers, out: AsyncQueue<ResponseInit>): Promise<void> {
    const input = requests[Symbol.asyncIterator]();
    const first = await input.next();
    if (first.done || first.value.message.case !== "header") throw new ConnectError("expected the request header first", Code.InvalidArgument);
    const header = first.value.message.value;
    const request = header.request;
    if (!request) throw new ConnectError("request header without request", Code.InvalidArgument);
    const imp = impersonationOf(header);

    const headers: OutgoingHttpHeaders = {};
    const upgrade = Object.keys(request.header).some((n) => n.toLowerCase() === "upgrade");
    let escapedPath: string | undefined;
    const invalid: string[] = [];
    for (const [name, value] of Object.entries(mapToNodeHeaders(request.header, { keepUpgrade: upgrade, onInvalid: (n) => invalid.push(n) }))) {
      const lower = name.toLowerCase();
      if (lower === "authorization" || lower === "cookie") continue;
      if (lower === escapedPathLower) {
        escapedPath = Array.isArray(value) ? String(value[0]) : String(value);
        continue;
      }
      // Always refused, as KAS's proxy does (GitLab's agentk refuses them only when impersonating).
      if (isImpersonationHeader(lower)) {
        throw new ConnectError(`nested impersonation is not supported: the request carries ${canonicalHeaderName(lower)}`, Code.InvalidArgument);
      }
      headers[name] = value;
    }
    if (imp) for (const [name, value] of impersonationHeaders(imp)) appendHeader(headers, name, value);
    if (header.contentLength !== undefined && headers["Content-Length"] === undefined) headers["Content-Length"] = String(header.contentLength);

    if (invalid.length > 0) throw new ConnectError(`invalid request header ${JSON.stringify(invalid[0])}`, Code.InvalidArgument);
    let path: string;
    try {
      path = pathForApiServer(request.urlPath, escapedPath);
    } catch (e) {
      if (e instanceof RequestPathError) throw new ConnectError(e.message, Code.InvalidArgument);
      throw e;
    }
    const pathAndQuery = path + mapToQueryString(request.query);
    const k8s = kubernetesRequestAttributes(request.method, path, { upgrade, watch: isWatchQuery(request.query.watch?.value[0]) });
    const { verb } = k8s;
    const method = request.method || "GET";
    // The API server request's span: a child of the tunnel call's (its traceparent is in the
    // call's headers), and the API server's parent (kube-apiserver reads traceparent).
    const span = tracing?.startSpan(method, SpanKind.CLIENT, tracing.fromHeaders(callHeaders));
    if (span?.isRecording()) {
      span.setAttributes({
        "http.request.method": method,
        "server.address": hostname,
        "server.port": Number(port),
        "url.full": `${server.origin}${basePath}${path}`,
        [ATTR_AGENT_MODULE]: "kubernetes_api",
        [ATTR_K8S_VERB]: verb,
        ...(k8s.resource ? { [ATTR_K8S_RESOURCE]: k8s.resource } : {}),
        ...(k8s.namespace ? { [ATTR_K8S_NAMESPACE]: k8s.namespace } : {}),
      });
      tracing!.injectHeaders(span, headers);
    }
    const startedAt = performance.now();
    const observe = (code: string) => {
      metrics?.requests.inc({ verb, code });
      metrics?.duration.observe({ verb, code }, (performance.now() - startedAt) / 1000);
      if (span?.isRecording() && /^\d+$/.test(code)) {
        span.setAttribute("http.response.status_code", Number(code));
        if (Number(code) >= 400) {
          span.setAttribute("error.type", code);
          span.setStatus({ code: SpanStatusCode.ERROR });
        }
      }
    };
    let opts: https.RequestOptions;
    try {
      const c = currentCredentials();
      opts = requestOptions(c instanceof Promise ? await c : c, method, pathAndQuery, headers);
    } catch (e) {
      span?.setStatus({ code: SpanStatusCode.ERROR, message: "cannot load the cluster credentials" });
      span?.end();
      throw e;
    }
    logger.debug({ method: request.method, path: request.urlPath, impersonating: imp?.username }, "forwarding to the API server");

    const req = (isHttps ? https : http).request(opts);
    const onAbort = () => req.destroy(new Error("call cancelled"));
    signal.addEventListener("abort", onAbort, { once: true });

    let upgradedSocket: ((socket: Duplex) => void) | undefined;
    const socketReady = new Promise<Duplex>((resolve) => (upgradedSocket = resolve));
    /** The API server answered: from then on only the answer matters. */
    let answered = false;

    // Request body, then (after an upgrade) the client's raw bytes.
    const pumpRequest = (async () => {
      let ended = false;
      let socket: Duplex | undefined;
      for (;;) {
        const next = await input.next();
        if (next.done) break;
        const msg = next.value.message;
        if (msg.case === "data" && !ended) {
          // After an early answer the rest of the body is read from KAS and dropped.
          if (answered || req.destroyed) continue;
          if (!req.write(msg.value.data)) await drained(req);
        } else if (msg.case === "trailer" && !ended) {
          ended = true;
          if (!req.destroyed) req.end();
        } else if (msg.case === "upgradeData") {
          socket ??= await socketReady;
          if (!socket.write(msg.value.data)) await drained(socket);
        } else {
          throw new ConnectError(`unexpected ${msg.case ?? "empty"} frame`, Code.InvalidArgument);
        }
      }
      if (!ended && !req.destroyed) req.end();
      // End of the request stream: half-close the upgraded connection.
      if (socket) socket.end();
      else if (upgrade) void socketReady.then((s) => s.end());
    })();
    pumpRequest.catch((e: unknown) => {
      if (!answered) req.destroy(e as Error);
    });

    try {
      await new Promise<void>((resolve, reject) => {
        // Always listened to: a write failing after the answer must not go unhandled.
        req.on("error", (e) => {
          if (answered) logger.debug({ err: e.message, path: request.urlPath }, "the API server answered before the request body was through");
          else reject(e);
        });
        req.once("response", (res: IncomingMessage) => {
          answered = true;
          observe(String(res.statusCode ?? 0));
          relayResponse(res, out).then(resolve, reject);
        });
        req.once("upgrade", (res: IncomingMessage, socket: Duplex, head: Buffer) => {
          answered = true;
          observe(String(res.statusCode ?? 0));
          upgradedSocket!(socket);
          relayUpgrade(res, socket, head, out, signal).then(resolve, reject);
        });
      });
    } catch (e) {
      if (!answered) observe(signal.aborted ? "cancelled" : "error");
      const error = signal.aborted
        ? new ConnectError("call cancelled", Code.Canceled)
        : new ConnectError(`Kubernetes API server request failed: ${(e as Error).message}`, Code.Unavailable);
      if (span?.isRecording()) {
        if (!answered) span.setAttribute("error.type", signal.aborted ? "cancelled" : (e as NodeJS.ErrnoException).code ?? "error");
        span.setStatus({ code: SpanStatusCode.ERROR, message: error.rawMessage });
      }
      throw error;
    } finally {
      signal.removeEventListener("abort", onAbort);
      span?.end();
    }
    // The request side ends by itself when KAS closes its send side (already done for a GET) or
    // the call ends; the response does not wait for it.
  }

  /** The API server's answer as the response header frame: hop-by-hop headers stay here (except a 101's Connection/Upgrade). */
  function headerFrame(res: IncomingMessage, upgraded = false): ResponseInit {
    const header: Record<string, ReturnType<typeof create<typeof ValuesSchema>>> = {};
    const listed = connectionOptions(res.headers.connection);
    for (let i = 0; i < res.rawHeaders.length; i += 2) {
      const lower = res.rawHeaders[i]!.toLowerCase();
      const keep = upgraded && (lower === "connection" || lower === "upgrade");
      if (!keep && (isHopByHop(lower) || listed.has(lower))) continue;
      const name = canonicalHeaderName(lower);
      const value = res.rawHeaders[i + 1]!;
      (header[name] ??= create(ValuesSchema, { value: [] })).value.push(value);
    }
    const statusCode = res.statusCode ?? 502;
    return {
      message: {
        case: "header",
        value: { response: { statusCode, status: `${statusCode} ${res.statusMessage ?? ""}`.trim(), header } },
      },
    };
  }

  async function pushData(out: AsyncQueue<ResponseInit>, chunk: Buffer, kind: "data" | "upgradeData"): Promise<void> {
    for (let off = 0; off < chunk.length; off += maxFrameBytes) {
      await out.push({ message: { case: kind, value: { data: chunk.subarray(off, Math.min(chunk.length, off + maxFrameBytes)) } } });
    }
  }

  async function relayResponse(res: IncomingMessage, out: AsyncQueue<ResponseInit>): Promise<void> {
    await out.push(headerFrame(res));
    // for-await pauses the response while a frame waits for room: backpressure to the API server.
    for await (const chunk of res as AsyncIterable<Buffer>) await pushData(out, chunk, "data");
    await out.push({ message: { case: "trailer", value: {} } });
  }

  async function relayUpgrade(res: IncomingMessage, socket: Duplex, head: Buffer, out: AsyncQueue<ResponseInit>, signal: AbortSignal): Promise<void> {
    const onAbort = () => socket.destroy();
    signal.addEventListener("abort", onAbort, { once: true });
    socket.on("error", () => {});
    try {
      await out.push(headerFrame(res, true));
      await out.push({ message: { case: "trailer", value: {} } });
      if (head.length > 0) await pushData(out, head, "upgradeData");
      for await (const chunk of socket as AsyncIterable<Buffer>) await pushData(out, chunk, "upgradeData");
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
  }

  logger.info({ server: server.origin }, "Kubernetes API proxy: forwarding to the cluster's API server");
  return {
    name: "kubernetes_api",
    services: (ctx) => {
      metrics ??= kubernetesApiAgentMetrics(ctx.metrics);
      tracing = ctx.tracing;
      return [{ service: KubernetesApi, implementation }];
    },
  };
}

/** Requests to the cluster's API server (docs/observability.md). */
function kubernetesApiAgentMetrics(registry: Registry) {
  return {
    requests: new client.Counter({
      name: "agentk_k8s_api_requests_total",
      help: "Requests the agent sent to the cluster's API server for the Kubernetes API proxy, by Kubernetes verb and HTTP status (error: no answer; cancelled: the caller left first).",
      labelNames: ["verb", "code"] as const,
      registers: [registry],
    }),
    duration: new client.Histogram({
      name: "agentk_k8s_api_request_duration_seconds",
      help: "Time until the cluster's API server answered (status and headers; a watch or exec goes on after), by Kubernetes verb and HTTP status.",
      labelNames: ["verb", "code"] as const,
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
  };
}

async function loadKubeConfig(options: KubernetesApiAgentModuleOptions): Promise<KubeConfig> {
  if (options.kubeconfig !== undefined && typeof options.kubeconfig !== "string") return options.kubeconfig;
  // Loaded on demand: the package is large and only agents that proxy the Kubernetes API need it.
  const { KubeConfig } = await import("@kubernetes/client-node");
  const kc = new KubeConfig();
  if (options.kubeconfig === "in-cluster") kc.loadFromCluster();
  else if (options.kubeconfig) kc.loadFromFile(options.kubeconfig);
  else kc.loadFromDefault();
  if (options.context) kc.setCurrentContext(options.context);
  return kc;
}

function impersonationOf(header: HttpRequest_Header): ImpersonationConfig | undefined {
  if (!header.extra) return undefined;
  const extra = anyUnpack(header.extra, HeaderExtraSchema);
  if (!extra) throw new ConnectError(`unexpected header extra ${header.extra.typeUrl}`, Code.InvalidArgument);
  const imp = extra.impConfig;
  return imp && !isEmptyImpersonation(imp) ? imp : undefined;
}

/** A pool of the previous TLS material: idle connections close now, busy ones (watches) when their request ends. */
function retire(agent: http.Agent): void {
  agent.maxFreeSockets = 0;
  for (const sockets of Object.values(agent.freeSockets)) for (const socket of sockets ?? []) socket.destroy();
}

/** Whether two sets of TLS options carry the same material (a keep-alive pool can be kept). */
function sameTls(a: https.RequestOptions, b: https.RequestOptions): boolean {
  const same = (x: unknown, y: unknown) =>
    x === y || (Buffer.isBuffer(x) && Buffer.isBuffer(y) ? x.equals(y) : JSON.stringify(x) === JSON.stringify(y));
  return (
    same(a.ca, b.ca) &&
    same(a.cert, b.cert) &&
    same(a.key, b.key) &&
    same(a.pfx, b.pfx) &&
    a.passphrase === b.passphrase &&
    a.servername === b.servername &&
    a.rejectUnauthorized === b.rejectUnauthorized
  );
}

function appendHeader(headers: OutgoingHttpHeaders, name: string, value: string): void {
  const existing = headers[name];
  if (existing === undefined) headers[name] = value;
  else headers[name] = [...(Array.isArray(existing) ? existing : [String(existing)]), value];
}

const escapedPathLower = ESCAPED_PATH_HEADER.toLowerCase();

