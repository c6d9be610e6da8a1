/**
 * A plain request through the Kubernetes API proxy (HTTP/1.1 or HTTP/2): the request body and the
 * agent's answer stream concurrently (a watch answers before any body ends), with backpressure
 * both ways; the answer is checked before it reaches the client.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { ServerResponse } from "node:http";
import http2, { type Http2ServerResponse } from "node:http2";
import type { HttpResponse_Header } from "../../../gen/gitlab/agent/grpctool/grpctool_pb.js";
import { isFinalStatusCode, safeReasonPhrase } from "../../../http/http-codec.js";
import { drained } from "../../../util/drained.js";
import { statusHeaders, statusJson, toK8sProxyError } from "./k8s-status.js";
import { RequestLife, responses, type AnyRequest, type AnyResponse, type ProxyRequests, type Started } from "./proxy-requests.js";

export async function handlePlainRequest(proxy: ProxyRequests, req: AnyRequest, res: AnyResponse): Promise<void> {
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
    started = await proxy.begin(req, false, life);
    const call = started.call;
    life.cancelOnEnd(call);
    // The request body, concurrently with the response (a watch answers before any body ends).
    // Once the call has ended (an early answer, such as the API server's 413 to a body too
    // large), the rest of the body is read and dropped, so the client gets that answer rather
    // than a reset connection; how the call ended is the response loop's to tell.
    const body = (async () => {
      let sending = true;
      for await (const chunk of req as AsyncIterable<Buffer>) {
        if (!sending) continue;
        try {
          await proxy.sendChunk(call, chunk, "data");
        } catch {
          sending = false;
        }
      }
      if (sending) {
        await proxy.sendTrailer(call);
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
        const headers = proxy.agentHeaders(started, r?.header ?? {}, { forHttp2: isHttp2 });
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
    proxy.calls.delete(call);
    await body;
    proxy.audit(life, started, req, code, startedAt);
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
    proxy.audit(life, started, req, code, startedAt, err);
  } finally {
    proxy.finished(started, life);
  }
}
