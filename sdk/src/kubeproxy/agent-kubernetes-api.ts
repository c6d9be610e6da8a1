/**
 * The agent half of the Kubernetes API proxy: serves `gitlab.agent.kubernetes_api.rpc.KubernetesApi/
 * MakeRequest` through the tunnel and forwards each request to the cluster's API server with the
 * agent's own credentials (a kubeconfig or the in-cluster ServiceAccount), adding Kubernetes
 * impersonation headers from the request's `HeaderExtra.imp_config` so that cluster RBAC decides.
 * Bodies stream both ways; a 101 answer (exec, attach, port-forward) switches both directions to
 * `upgradeData` frames over the raw connection.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import http, { type IncomingMessage, type OutgoingHttpHeaders } from "node:http";
import https from "node:https";
import type { Duplex } from "node:stream";
import type { KubeConfig } from "@kubernetes/client-node";
import pino, { type Logger } from "pino";
import type { AgentModule } from "../agent/create-agent.js";
import type { HttpResponseSchema} from "../gen/gitlab/agent/grpctool/grpctool_pb.js";
import { type HttpRequest, type HttpRequest_Header } from "../gen/gitlab/agent/grpctool/grpctool_pb.js";
import { HeaderExtraSchema, KubernetesApi, type ImpersonationConfig } from "../gen/gitlab/agent/kubernetes_api/rpc/rpc_pb.js";
import { ValuesSchema } from "../gen/gitlab/agent/prototool/prototool_pb.js";
import { AsyncQueue } from "../util/async-queue.js";
import { canonicalHeaderName, mapToNodeHeaders, mapToQueryString } from "./http-codec.js";
import { impersonationHeaders, isEmptyImpersonation, isImpersonationHeader } from "./impersonation.js";
import { drained } from "../util/drained.js";

export interface AgentKubernetesApiOptions {
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
}

type ResponseInit = MessageInitShape<typeof HttpResponseSchema>;

/** Loads the cluster credentials and returns the module serving KubernetesApi through the tunnel. */
export async function createAgentKubernetesApi(options: AgentKubernetesApiOptions = {}): Promise<AgentModule> {
  const logger = options.logger ?? pino({ level: "silent" });
  const kc = await loadKubeConfig(options);
  const cluster = kc.getCurrentCluster();
  if (!cluster) throw new Error("kubeconfig has no current cluster");
  const server = new URL(cluster.server);
  const isHttps = server.protocol === "https:";
  const maxFrameBytes = options.maxFrameBytes ?? 1024 * 1024;
  let keepAliveAgent: http.Agent | undefined;

  /** Request options with the agent's credentials (re-read per request: in-cluster tokens rotate). */
  async function requestOptions(method: string, pathAndQuery: string, headers: OutgoingHttpHeaders): Promise<https.RequestOptions> {
    const opts: https.RequestOptions = { method, headers: {} };
    await kc.applyToHTTPSOptions(opts);
    if (!cluster!.proxyUrl) {
      // One keep-alive pool instead of the agent applyToHTTPSOptions makes per call.
      keepAliveAgent ??= isHttps
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
      opts.agent = keepAliveAgent;
    }
    const credentialHeaders = (opts.headers ?? {}) as OutgoingHttpHeaders;
    opts.headers = { ...headers, ...credentialHeaders };
    opts.protocol = server.protocol;
    opts.hostname = server.hostname.replace(/^\[|\]$/g, "");
    opts.port = server.port || (isHttps ? 443 : 80);
    const basePath = server.pathname.replace(/\/$/, "");
    opts.path = basePath + pathAndQuery;
    return opts;
  }

  const implementation: Partial<ServiceImpl<typeof KubernetesApi>> = {
    makeRequest(requests: AsyncIterable<HttpRequest>, ctx: HandlerContext): AsyncIterable<ResponseInit> {
      const out = new AsyncQueue<ResponseInit>(8);
      void forward(requests, ctx.signal, out).then(
        () => out.close(),
        (e: unknown) => out.close(ConnectError.from(e)),
      );
      return out;
    },
  };

  async function forward(requests: AsyncIterable<HttpRequest>, signal: AbortSignal, out: AsyncQueue<ResponseInit>): Promise<void> {
    const input = requests[Symbol.asyncIterator]();
    const first = await input.next();
    if (first.done || first.value.message.case !== "header") throw new ConnectError("expected the request header first", Code.InvalidArgument);
    const header = first.value.message.value;
    const request = header.request;
    if (!request) throw new ConnectError("request header without request", Code.InvalidArgument);
    const imp = impersonationOf(header);

    const headers: OutgoingHttpHeaders = {};
    const upgrade = Object.keys(request.header).some((n) => n.toLowerCase() === "upgrade");
    for (const [name, value] of Object.entries(mapToNodeHeaders(request.header, { keepUpgrade: upgrade }))) {
      const lower = name.toLowerCase();
      if (lower === "authorization" || lower === "cookie") continue;
      // Always refused, as KAS's proxy does (GitLab's agentk refuses them only when impersonating).
      if (isImpersonationHeader(lower)) {
        throw new ConnectError(`nested impersonation is not supported: the request carries ${canonicalHeaderName(lower)}`, Code.InvalidArgument);
      }
      headers[name] = value;
    }
    if (imp) for (const [name, value] of impersonationHeaders(imp)) appendHeader(headers, name, value);
    if (header.contentLength !== undefined && headers["Content-Length"] === undefined) headers["Content-Length"] = String(header.contentLength);

    const pathAndQuery = encodePath(request.urlPath) + mapToQueryString(request.query);
    const opts = await requestOptions(request.method || "GET", pathAndQuery, headers);
    logger.debug({ method: request.method, path: request.urlPath, impersonating: imp?.username }, "forwarding to the API server");

    const req = (isHttps ? https : http).request(opts);
    const onAbort = () => req.destroy(new Error("call cancelled"));
    signal.addEventListener("abort", onAbort, { once: true });

    let upgradedSocket: ((socket: Duplex) => void) | undefined;
    const socketReady = new Promise<Duplex>((resolve) => (upgradedSocket = resolve));

    // Request body, then (after an upgrade) the client's raw bytes.
    const pumpRequest = (async () => {
      let ended = false;
      let socket: Duplex | undefined;
      for (;;) {
        const next = await input.next();
        if (next.done) break;
        const msg = next.value.message;
        if (msg.case === "data" && !ended) {
          if (!req.write(msg.value.data)) await drained(req);
        } else if (msg.case === "trailer" && !ended) {
          ended = true;
          req.end();
        } else if (msg.case === "upgradeData") {
          socket ??= await socketReady;
          if (!socket.write(msg.value.data)) await drained(socket);
        } else {
          throw new ConnectError(`unexpected ${msg.case ?? "empty"} frame`, Code.InvalidArgument);
        }
      }
      if (!ended) req.end();
      // End of the request stream: half-close the upgraded connection.
      if (socket) socket.end();
      else if (upgrade) void socketReady.then((s) => s.end());
    })();
    pumpRequest.catch((e: unknown) => req.destroy(e as Error));

    try {
      await new Promise<void>((resolve, reject) => {
        req.once("error", reject);
        req.once("response", (res: IncomingMessage) => {
          relayResponse(res, out)
            .then(resolve, reject)
            .finally(() => req.off("error", reject));
        });
        req.once("upgrade", (res: IncomingMessage, socket: Duplex, head: Buffer) => {
          upgradedSocket!(socket);
          relayUpgrade(res, socket, head, out, signal).then(resolve, reject);
        });
      });
    } catch (e) {
      if (signal.aborted) throw new ConnectError("call cancelled", Code.Canceled);
      throw new ConnectError(`Kubernetes API server request failed: ${(e as Error).message}`, Code.Unavailable);
    } finally {
      signal.removeEventListener("abort", onAbort);
    }
    // Let the request side finish (it ends when KAS closes its send side).
    await Promise.race([pumpRequest.catch(() => {}), new Promise((r) => setTimeout(r, 0))]);
  }

  function headerFrame(res: IncomingMessage): ResponseInit {
    const header: Record<string, ReturnType<typeof create<typeof ValuesSchema>>> = {};
    for (let i = 0; i < res.rawHeaders.length; i += 2) {
      const name = canonicalHeaderName(res.rawHeaders[i]!);
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
      await out.push(headerFrame(res));
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
    services: [{ service: KubernetesApi, implementation }],
  };
}

async function loadKubeConfig(options: AgentKubernetesApiOptions): Promise<KubeConfig> {
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

function appendHeader(headers: OutgoingHttpHeaders, name: string, value: string): void {
  const existing = headers[name];
  if (existing === undefined) headers[name] = value;
  else headers[name] = [...(Array.isArray(existing) ? existing : [String(existing)]), value];
}

/** Percent-encodes each path segment (KAS sends the decoded path, as GitLab's `URL.Path`). */
function encodePath(path: string): string {
  const p = path.startsWith("/") ? path : `/${path}`;
  return p
    .split("/")
    .map((s) => encodeURIComponent(s).replace(/%3A/gi, ":").replace(/%40/g, "@").replace(/%2C/gi, ",").replace(/%3D/gi, "=").replace(/%2B/gi, "+"))
    .join("/");
}

