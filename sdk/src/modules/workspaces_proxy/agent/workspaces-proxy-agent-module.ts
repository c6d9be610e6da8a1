/**
 * The agent half of the workspace proxy: serves `kasbridge.workspaces_proxy.v1.WorkspacesProxyService/
 * MakeRequest` through the tunnel. Each call names a workspace Service and port (HeaderExtra); the
 * agent checks that the Service is a workspace of its own (workspace-target.ts), connects to it
 * (the API server's pod port-forward, or the Service directly when the agent runs in the
 * cluster) and runs the HTTP request on that connection. Bodies stream both ways; after a 101
 * (WebSocket) both directions are raw `upgradeData` frames.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { anyUnpack } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type HandlerContext, type ServiceImpl } from "@connectrpc/connect";
import http, { type IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import type { KubeConfig } from "@kubernetes/client-node";
import pino, { type Logger } from "pino";
import type { AgentModule } from "../../../agent/agent-module.js";
import { KubeHttp } from "../../../agent/kube/kube-http.js";
import type { HttpRequest, HttpResponseSchema } from "../../../gen/gitlab/agent/grpctool/grpctool_pb.js";
import { ValuesSchema } from "../../../gen/gitlab/agent/prototool/prototool_pb.js";
import { HeaderExtraSchema, WorkspacesProxyService } from "../../../gen/kasbridge/workspaces_proxy/v1/workspaces_proxy_pb.js";
import { canonicalHeaderName, connectionOptions, isHopByHop, mapToNodeHeaders } from "../../../http/http-codec.js";
import { AsyncQueue } from "../../../util/async-queue.js";
import { drained } from "../../../util/drained.js";
import { dialWorkspace, type WorkspaceConnectMode, type WorkspaceDialerOptions } from "./workspace-target.js";

export interface WorkspacesProxyAgentModuleOptions {
  /** The agent's cluster credentials. */
  kubeconfig: KubeConfig;
  /**
   * How the agent reaches workspaces: "port-forward" (default) through the API server, which works
   * wherever the agent runs; "service" dials `<service>.<namespace>.svc.<clusterDomain>`, for an
   * agent in the cluster (the workspace NetworkPolicy must let it in).
   */
  mode?: WorkspaceConnectMode;
  /** Default "cluster.local". */
  clusterDomain?: string;
  /** Service mode: where a Service listens (tests). Default: its cluster DNS name. */
  serviceAddress?: WorkspaceDialerOptions["serviceAddress"];
  logger?: Logger;
  /** Largest response frame; bigger chunks are split. Default 1 MiB. */
  maxFrameBytes?: number;
}

type ResponseInit = MessageInitShape<typeof HttpResponseSchema>;

/** A request target as KAS sends it: a path with its query, no spaces or control characters. */
const REQUEST_TARGET = /^\/[\x21-\x7e]*$/;

export function workspacesProxyAgentModule(options: WorkspacesProxyAgentModuleOptions): AgentModule {
  const logger = options.logger ?? pino({ level: "silent" });
  const maxFrameBytes = options.maxFrameBytes ?? 1024 * 1024;
  const dialer: WorkspaceDialerOptions = {
    kube: new KubeHttp(options.kubeconfig),
    kubeconfig: options.kubeconfig,
    mode: options.mode ?? "port-forward",
    clusterDomain: options.clusterDomain,
    serviceAddress: options.serviceAddress,
  };
  /** This agent's id, from its configuration: the label its workspaces carry. */
  let agentId: string | undefined;
  /** remote_development.enabled of the agent's configuration: without it, no workspace is reached. */
  let enabled = false;

  const implementation: Partial<ServiceImpl<typeof WorkspacesProxyService>> = {
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
    const extra = header.extra && anyUnpack(header.extra, HeaderExtraSchema);
    if (!request || !extra) throw new ConnectError("the request header needs the request and the workspace target", Code.InvalidArgument);
    if (!REQUEST_TARGET.test(request.urlPath)) throw new ConnectError("the request target must be a path", Code.InvalidArgument);
    const upgrade = Object.keys(request.header).some((n) => n.toLowerCase() === "upgrade");
    const invalid: string[] = [];
    const headers = mapToNodeHeaders(request.header, { keepUpgrade: upgrade, onInvalid: (n) => invalid.push(n) });
    if (invalid.length > 0) throw new ConnectError(`invalid request header ${JSON.stringify(invalid[0])}`, Code.InvalidArgument);
    headers.Host = /^[\x21-\x7e]+$/.test(extra.host) ? extra.host : `${extra.service}.${extra.namespace}`;
    if (header.contentLength !== undefined && !Object.keys(headers).some((n) => n.toLowerCase() === "content-length")) headers["Content-Length"] = String(header.contentLength);

    if (!enabled) throw new ConnectError("remote development is not enabled in this agent's configuration", Code.FailedPrecondition);
    const connection = await dialWorkspace(dialer, agentId, extra, signal);
    logger.debug({ namespace: extra.namespace, service: extra.service, port: extra.port, method: request.method }, "forwarding to a workspace");
    const req = http.request({ createConnection: () => connection, method: request.method || "GET", path: request.urlPath, headers, setHost: false });
    const onAbort = () => {
      req.destroy(new Error("call cancelled"));
      connection.destroy();
    };
    signal.addEventListener("abort", onAbort, { once: true });
    let answered = false;
    let upgraded: Duplex | undefined;

    // The request body, then (after a 101) the client's raw bytes.
    const pumpRequest = (async () => {
      let ended = false;
      for (;;) {
        const next = await input.next();
        if (next.done) break;
        const msg = next.value.message;
        if (msg.case === "data" && !ended) {
          if (answered || req.destroyed) continue;
          if (!req.write(msg.value.data)) await drained(req);
        } else if (msg.case === "trailer" && !ended) {
          ended = true;
          if (!req.destroyed) req.end();
        } else if (msg.case === "upgradeData" && upgraded) {
          if (!upgraded.write(msg.value.data)) await drained(upgraded);
        } else {
          throw new ConnectError(`unexpected ${msg.case ?? "empty"} frame`, Code.InvalidArgument);
        }
      }
      if (!ended && !req.destroyed) req.end();
      upgraded?.end();
    })();
    pumpRequest.catch((e: unknown) => {
      if (!answered) req.destroy(e as Error);
      else upgraded?.destroy();
    });

    try {
      await new Promise<void>((resolve, reject) => {
        req.on("error", (e) => (answered ? logger.debug({ err: e.message }, "the workspace answered before the request body was through") : reject(e)));
        req.once("response", (res: IncomingMessage) => {
          answered = true;
          relayResponse(res, out).then(resolve, reject);
        });
        req.once("upgrade", (res: IncomingMessage, socket: Duplex, head: Buffer) => {
          answered = true;
          upgraded = socket;
          relayUpgrade(res, socket, head, out).then(resolve, reject);
        });
      });
    } catch (e) {
      if (signal.aborted) throw new ConnectError("call cancelled", Code.Canceled);
      throw new ConnectError(`workspace request failed: ${(e as Error).message}`, Code.Unavailable);
    } finally {
      signal.removeEventListener("abort", onAbort);
      connection.destroy();
    }
  }

  /** The workspace's answer as the response header frame, hop-by-hop headers left here (a 101 keeps Connection/Upgrade). */
  function headerFrame(res: IncomingMessage, upgraded = false): ResponseInit {
    const header: Record<string, ReturnType<typeof create<typeof ValuesSchema>>> = {};
    const listed = connectionOptions(res.headers.connection);
    for (let i = 0; i < res.rawHeaders.length; i += 2) {
      const lower = res.rawHeaders[i]!.toLowerCase();
      const keep = upgraded && (lower === "connection" || lower === "upgrade");
      if (!keep && (isHopByHop(lower) || listed.has(lower))) continue;
      (header[canonicalHeaderName(lower)] ??= create(ValuesSchema, { value: [] })).value.push(res.rawHeaders[i + 1]!);
    }
    const statusCode = res.statusCode ?? 502;
    return { message: { case: "header", value: { response: { statusCode, status: `${statusCode} ${res.statusMessage ?? ""}`.trim(), header } } } };
  }

  async function pushData(out: AsyncQueue<ResponseInit>, chunk: Buffer, kind: "data" | "upgradeData"): Promise<void> {
    for (let off = 0; off < chunk.length; off += maxFrameBytes) {
      await out.push({ message: { case: kind, value: { data: chunk.subarray(off, Math.min(chunk.length, off + maxFrameBytes)) } } });
    }
  }

  async function relayResponse(res: IncomingMessage, out: AsyncQueue<ResponseInit>): Promise<void> {
    await out.push(headerFrame(res));
    for await (const chunk of res as AsyncIterable<Buffer>) await pushData(out, chunk, "data");
    await out.push({ message: { case: "trailer", value: {} } });
  }

  async function relayUpgrade(res: IncomingMessage, socket: Duplex, head: Buffer, out: AsyncQueue<ResponseInit>): Promise<void> {
    socket.on("error", () => {});
    await out.push(headerFrame(res, true));
    await out.push({ message: { case: "trailer", value: {} } });
    if (head.length > 0) await pushData(out, head, "upgradeData");
    for await (const chunk of socket as AsyncIterable<Buffer>) await pushData(out, chunk, "upgradeData");
  }

  return {
    name: "workspaces_proxy",
    configSections: ["remote_development"],
    services: () => [{ service: WorkspacesProxyService, implementation }],
    applyConfiguration(config) {
      agentId = config.agentId > 0n ? String(config.agentId) : undefined;
      enabled = config.remoteDevelopment?.enabled === true;
    },
    async close() {
      dialer.kube.close();
    },
  };
}
