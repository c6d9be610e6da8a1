/**
 * One workspace request through the agent's tunnel, KAS side: the header frame, then the body (or,
 * after a 101, the upgraded connection's bytes) both ways as `data`/`upgradeData` frames, with
 * backpressure. The agent's answer is checked before it reaches the client: a final status, header
 * names and values without line breaks, no hop-by-hop headers.
 */
import { create, toBinary } from "@bufbuild/protobuf";
import { anyPack } from "@bufbuild/protobuf/wkt";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Duplex } from "node:stream";
import { HttpRequestSchema } from "../../../gen/gitlab/agent/grpctool/grpctool_pb.js";
import { HeaderExtraSchema } from "../../../gen/kasbridge/workspaces_proxy/v1/workspaces_proxy_pb.js";
import { isFinalStatusCode, mapToNodeHeaders, nodeHeadersToMap, rawResponseHead, safeReasonPhrase } from "../../../http/http-codec.js";
import type { WorkspaceAccessAnswer } from "../../../platform-client/platform-client.js";
import type { TunnelCall } from "../../../tunnel/server/server-tunnel.js";
import { drained } from "../../../util/drained.js";
import { readRefusalBody, responses } from "../../kubernetes_api/server/proxy-requests.js";
import { WorkspaceProxyError } from "./workspace-authorizer.js";

export interface RelayOptions {
  /** Largest request frame; bodies are split into frames of at most this. */
  maxFrameBytes: number;
  /** Called with each header name the agent's answer had that could not be sent on. */
  onInvalidHeader(name: string): void;
}

/** Sends the request header frame: the request target as received, the headers the workspace may see, the target. */
export async function sendRequestHeader(call: TunnelCall, req: IncomingMessage, headers: IncomingMessage["headers"], answer: WorkspaceAccessAnswer, upgrade: boolean): Promise<void> {
  const extra = create(HeaderExtraSchema, {
    namespace: answer.target.namespace,
    service: answer.target.service,
    port: answer.target.port,
    workspaceId: BigInt(answer.workspace.id),
    host: req.headers.host ?? "",
  });
  const length = req.headers["content-length"];
  const header = create(HttpRequestSchema, {
    message: {
      case: "header",
      value: {
        request: {
          method: (req.method ?? "GET").toUpperCase(),
          header: nodeHeadersToMap(headers, { keepUpgrade: upgrade }),
          // The whole request target, path and query untouched: the workspace sees what the browser sent.
          urlPath: req.url ?? "/",
        },
        extra: anyPack(HeaderExtraSchema, extra),
        ...(length !== undefined && /^\d+$/.test(length) ? { contentLength: BigInt(length) } : {}),
      },
    },
  });
  await call.send(toBinary(HttpRequestSchema, header));
}

async function sendChunk(call: TunnelCall, chunk: Uint8Array, kind: "data" | "upgradeData", maxFrameBytes: number): Promise<void> {
  for (let off = 0; off < chunk.length; off += maxFrameBytes) {
    const data = chunk.subarray(off, Math.min(chunk.length, off + maxFrameBytes));
    await call.send(toBinary(HttpRequestSchema, create(HttpRequestSchema, { message: { case: kind, value: { data } } })));
  }
}

async function sendTrailer(call: TunnelCall): Promise<void> {
  await call.send(toBinary(HttpRequestSchema, create(HttpRequestSchema, { message: { case: "trailer", value: {} } })));
}

/**
 * A plain request: the body goes up while the answer comes down (a server-sent event stream
 * answers before any body ends). Resolves with the status once the answer is complete; throws
 * WorkspaceProxyError when nothing was answered yet, anything else mid-answer.
 */
export async function relayPlain(call: TunnelCall, req: IncomingMessage, res: ServerResponse, options: RelayOptions): Promise<number> {
  const body = (async () => {
    for await (const chunk of req as AsyncIterable<Buffer>) await sendChunk(call, chunk, "data", options.maxFrameBytes);
    await sendTrailer(call);
    await call.closeSend();
  })().catch(() => {
    // The call ended first (an early answer, or a failure the response loop reports).
  });
  let status = 0;
  let complete = false;
  for await (const msg of responses(call)) {
    if (msg.case === "header") {
      const r = msg.value.response;
      status = r?.statusCode ?? 0;
      if (!isFinalStatusCode(status)) throw new WorkspaceProxyError(502, `the workspace answered with status ${status}`);
      res.writeHead(status, safeReasonPhrase(r?.status.replace(/^\d+\s*/, "") ?? "") || undefined, mapToNodeHeaders(r?.header ?? {}, { onInvalid: options.onInvalidHeader }));
      res.flushHeaders();
    } else if (msg.case === "data") {
      if (status === 0) throw new WorkspaceProxyError(502, "the agent sent data before the response header");
      if (!complete && !res.write(msg.value.data)) await drained(res);
    } else if (msg.case === "trailer" && status !== 0) {
      complete = true;
      res.end();
    }
  }
  if (status === 0) throw new WorkspaceProxyError(502, "the agent answered no response");
  if (!complete) res.end();
  void body;
  return status;
}

/**
 * An upgrade (WebSocket): after the workspace's 101 the raw bytes flow both ways as `upgradeData`
 * frames; a refusal is answered as a normal response, its body bounded by `maxRefusalBytes`.
 */
export async function relayUpgrade(call: TunnelCall, socket: Duplex, head: Buffer, options: RelayOptions & { maxRefusalBytes: number }): Promise<number> {
  await sendTrailer(call); // an upgrade request has no body
  const it = responses(call)[Symbol.asyncIterator]();
  const first = await it.next();
  if (first.done || first.value.case !== "header") throw new WorkspaceProxyError(502, "the agent answered no response");
  const r = first.value.value.response;
  const status = r?.statusCode ?? 0;
  if (status !== 101 && !isFinalStatusCode(status)) throw new WorkspaceProxyError(502, `the workspace answered with status ${status}`);
  if (status !== 101) {
    const body = await readRefusalBody(it, options.maxRefusalBytes);
    if (!body) throw new WorkspaceProxyError(502, `the workspace's answer refusing the upgrade exceeds ${options.maxRefusalBytes} bytes`);
    const headers = mapToNodeHeaders(r?.header ?? {}, { onInvalid: options.onInvalidHeader });
    for (const name of Object.keys(headers)) if (name.toLowerCase() === "content-length") delete headers[name];
    socket.end(Buffer.concat([Buffer.from(rawResponseHead(status, r?.status.replace(/^\d+\s*/, "") ?? "", { ...headers, "Content-Length": String(body.length), Connection: "close" })), body]));
    call.cancel();
    return status;
  }
  socket.write(rawResponseHead(101, "Switching Protocols", mapToNodeHeaders(r?.header ?? {}, { keepUpgrade: true, onInvalid: options.onInvalidHeader })));
  const up = (async () => {
    if (head.length > 0) await sendChunk(call, head, "upgradeData", options.maxFrameBytes);
    for await (const chunk of socket as AsyncIterable<Buffer>) await sendChunk(call, chunk, "upgradeData", options.maxFrameBytes);
    await call.closeSend();
  })().catch(() => {});
  for (;;) {
    const next = await it.next();
    if (next.done) break;
    if (next.value.case === "upgradeData" && !socket.write(next.value.value.data)) await drained(socket);
  }
  socket.end();
  void up;
  return 101;
}
