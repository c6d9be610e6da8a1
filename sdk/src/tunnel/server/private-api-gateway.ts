import type { IncomingHttpHeaders, ServerHttp2Stream } from "node:http2";
import { create, toBinary, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "pino";
import { GatewayKasResponseSchema } from "../../gen/gitlab/agent/kas/kasapp_pb.js";
import { DEFAULT_MAX_MESSAGE_BYTES } from "../../grpc/limits.js";
import { endGrpcResponse, writeGrpcMessage } from "../../grpc/raw-wire.js";
import { MessageInbox } from "../../util/message-inbox.js";
import { deadlineTimer } from "../../util/timers.js";
import { statusFromError } from "../rpc-status.js";
import { readGatewayRequest, refuseNonGrpc } from "./gateway-request.js";
import type { ServerTunnel, TunnelCall } from "./server-tunnel.js";
import type { TunnelRegistry } from "./tunnel-registry.js";

export interface PrivateApiGatewayOptions {
  /** This replica's tunnels: the private API only routes to them, so calls never loop. */
  registry: TunnelRegistry;
  logger: Logger;
  /** Checks the routing replica's JWT; throws a ConnectError to refuse. */
  authorize(headers: Headers): Promise<void>;
  /** Largest request or response message. Default 16 MiB. */
  maxMessageBytes?: number;
  /**
   * Longest wait for a tunnel when the routing replica set no deadline (it normally gives up
   * itself, after GitLab's 20 s, by ending its request). Default 60 000 ms.
   */
  maxTunnelWaitMs?: number;
  /** Observes each finished call (metrics). */
  onCallEnd?(info: { agentId: number; method: string; code: Code | 0; durationMs: number }): void;
}

type GatewayKasResponseInit = MessageInitShape<typeof GatewayKasResponseSchema>;

/**
 * The gateway half of GitLab's kas-to-kas routing, on the private API (8155): another replica
 * calls an agent's method here (every method as a bidi stream) with `kas-hop-routing-agent-id`,
 * and gets `GatewayKasResponse` messages back: `no_tunnel` while this replica has no idle tunnel
 * of the agent, `tunnel_ready` once it holds one for the call, then, after the router's
 * `StartStreaming`, the agent's `header`, `message`s, `trailer` and `error`. The router's further
 * request messages are the call's, as they are. A router that ends its request before
 * `StartStreaming` went elsewhere: the tunnel goes back to the registry and the call ends OK. A
 * failure of this replica's side (the agent's tunnel broke) ends the call with that status.
 */
export function createPrivateApiGateway(options: PrivateApiGatewayOptions) {
  const maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  const maxWaitMs = options.maxTunnelWaitMs ?? 60_000;
  const { registry } = options;

  return async function handleStream(stream: ServerHttp2Stream, rawHeaders: IncomingHttpHeaders): Promise<void> {
    const started = Date.now();
    const method = String(rawHeaders[":path"] ?? "");
    let agentId = 0;
    if (refuseNonGrpc(stream, rawHeaders)) return;
    stream.on("error", () => {});
    const callAbort = new AbortController();
    const onRouterGone = () => callAbort.abort(new ConnectError("the routing KAS cancelled the call", Code.Canceled));
    stream.once("close", onRouterGone);
    stream.once("aborted", onRouterGone);
    let tunnel: ServerTunnel | undefined;
    let call: TunnelCall | undefined;
    let error: ConnectError | undefined;
    try {
      const request = await readGatewayRequest(rawHeaders, options.authorize, maxMessageBytes);
      agentId = request.agentId;
      const input = new MessageInbox<Uint8Array>();
      input.source = stream;
      stream.on("data", (chunk: Buffer) => {
        try {
          for (const message of request.reader.push(chunk)) input.deliver(message);
        } catch (e) {
          input.fail(e);
        }
      });
      stream.once("end", () => {
        if (request.reader.hasPartialFrame) input.fail(new ConnectError("request ended inside a message", Code.Internal));
        else input.end();
      });
      stream.once("close", () => input.fail(new ConnectError("the routing KAS cancelled the call", Code.Canceled)));
      // Read before the tunnel is found: the router may give up (end its request) meanwhile.
      let ready = false;
      const first = input.next();
      first.then(
        (r) => {
          if (!ready) callAbort.abort(r.done ? routerWentElsewhere : new ConnectError("message before tunnel_ready", Code.InvalidArgument));
        },
        (e: unknown) => callAbort.abort(e),
      );
      tunnel = registry.tryAcquire(agentId, method);
      if (!tunnel) {
        await send(stream, { msg: { case: "noTunnel", value: {} } });
        const waitMs = Math.min(maxWaitMs, request.timeoutMs ?? Infinity);
        const timer = deadlineTimer(waitMs, () => callAbort.abort(new ConnectError(`agent ${agentId} is not connected`, Code.Unavailable)));
        try {
          tunnel = await registry.acquire(agentId, method, callAbort.signal);
        } catch (e) {
          if (callAbort.signal.reason === routerWentElsewhere) return;
          throw e;
        } finally {
          clearTimeout(timer);
        }
      }
      ready = true;
      await send(stream, { msg: { case: "tunnelReady", value: {} } });
      // StartStreaming (any message): go ahead. The end of the request: the router took another tunnel.
      if ((await first).done) return;
      if (callAbort.signal.aborted) throw ConnectError.from(callAbort.signal.reason);
      call = tunnel.start(request.method, request.meta);
      tunnel = undefined;
      const active = call;
      callAbort.signal.addEventListener("abort", () => active.cancel(ConnectError.from(callAbort.signal.reason)), { once: true });
      void pumpInput(input, active).catch((e: unknown) => active.cancel(ConnectError.from(e)));
      for await (const event of active.events) {
        if (event.kind === "header") {
          await send(stream, { msg: { case: "header", value: { meta: event.meta } } });
        } else if (event.kind === "message") {
          await send(stream, { msg: { case: "message", value: { data: event.data } } });
        } else {
          await send(stream, { msg: { case: "trailer", value: { meta: event.trailer } } });
          if (event.error) await send(stream, { msg: { case: "error", value: { status: statusFromError(event.error) } } });
          break;
        }
      }
    } catch (e) {
      error = ConnectError.from(e);
      call?.cancel(error);
    } finally {
      stream.off("close", onRouterGone);
      stream.off("aborted", onRouterGone);
      // A tunnel this call took but never started is idle again.
      if (tunnel) registry.release(tunnel);
      endGrpcResponse(stream, error);
      options.onCallEnd?.({ agentId, method, code: error?.code ?? 0, durationMs: Date.now() - started });
    }
  };
}

/** Abort reason: the router ended its request before StartStreaming. */
const routerWentElsewhere = new ConnectError("the routing KAS took a tunnel elsewhere", Code.Canceled);

async function send(stream: ServerHttp2Stream, message: GatewayKasResponseInit): Promise<void> {
  if (stream.destroyed || stream.closed) throw new ConnectError("the routing KAS went away", Code.Canceled);
  await writeGrpcMessage(stream, toBinary(GatewayKasResponseSchema, create(GatewayKasResponseSchema, message)));
}

/** The router's request messages after StartStreaming go to the agent; its end half-closes the call. */
async function pumpInput(input: MessageInbox<Uint8Array>, call: TunnelCall): Promise<void> {
  for (;;) {
    const next = await input.next();
    if (next.done) return call.closeSend();
    await call.send(next.value);
  }
}
