/**
 * An upgrade through the Kubernetes API proxy (HTTP/1.1: SPDY/3.1 and WebSocket for exec, attach,
 * port-forward): after the agent's 101 both directions are `upgradeData` frames over the raw
 * socket; a refused upgrade is answered as a normal response with a bounded body.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import http, { type IncomingMessage } from "node:http";
import type { Duplex } from "node:stream";
import { isFinalStatusCode, rawResponseHead } from "../../../http/http-codec.js";
import { drained } from "../../../util/drained.js";
import { statusHeaders, statusJson, toK8sProxyError } from "./k8s-status.js";
import { RequestLife, readRefusalBody, responses, type ProxyRequests, type Started } from "./proxy-requests.js";

export async function handleUpgradeRequest(proxy: ProxyRequests, req: IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
  const startedAt = Date.now();
  const life = new RequestLife();
  socket.on("close", () => life.clientLeft());
  socket.on("error", () => {});
  let started: Started | undefined;
  let code = 0;
  try {
    started = await proxy.begin(req, true, life);
    const call = started.call;
    life.cancelOnEnd(call);
    await proxy.sendTrailer(call); // an upgrade request has no body
    const it = responses(call)[Symbol.asyncIterator]();
    const first = await it.next();
    if (first.done || first.value.case !== "header") throw new ConnectError(`agent ${started.authz.agentId} answered no response`, Code.Unavailable);
    const r = first.value.value.response;
    const status = r?.statusCode ?? 0;
    if (status !== 101 && !isFinalStatusCode(status)) throw new ConnectError(`agent ${started.authz.agentId} answered with status ${status}`, Code.Internal);
    if (status !== 101) {
      // Refused (RBAC, bad request): answer it as a normal response and close the socket.
      const body = await readRefusalBody(it, proxy.options.maxUpgradeRefusalBytes);
      if (!body) {
        throw new ConnectError(`agent ${started.authz.agentId}'s answer refusing the upgrade exceeds ${proxy.options.maxUpgradeRefusalBytes} bytes`, Code.Internal);
      }
      code = status;
      const headers = proxy.agentHeaders(started, r?.header ?? {}, {});
      for (const name of Object.keys(headers)) if (name.toLowerCase() === "content-length") delete headers[name];
      headers["Content-Length"] = String(body.length);
      headers.Connection = "close";
      socket.end(Buffer.concat([Buffer.from(rawResponseHead(code, r?.status.replace(/^\d+\s*/, "") || http.STATUS_CODES[code] || "", headers)), body]));
      await call.closeSend().catch(() => {});
      call.cancel();
      proxy.audit(life, started, req, code, startedAt);
      return;
    }
    code = 101;
    socket.write(rawResponseHead(101, "Switching Protocols", proxy.agentHeaders(started, r?.header ?? {}, { keepUpgrade: true })));
    // Client -> agent, with backpressure: the socket is paused while a frame waits for room.
    const up = (async () => {
      if (head.length > 0) await proxy.sendChunk(call, head, "upgradeData");
      for await (const chunk of socket as AsyncIterable<Buffer>) await proxy.sendChunk(call, chunk, "upgradeData");
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
    proxy.audit(life, started, req, code, startedAt);
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
    proxy.audit(life, started, req, code, startedAt, err);
  } finally {
    proxy.finished(started, life);
  }
}
