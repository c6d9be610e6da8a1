// Test fixtures of the transport tests (a *.test-support.ts file: no tests, not in the package).
import { createHook } from "node:async_hooks";
import type * as http2 from "node:http2";
import { create } from "@bufbuild/protobuf";
import type { Code} from "@connectrpc/connect";
import { ConnectError, type ConnectRouter, type HandlerContext } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { BidiResponseSchema, EchoService, ServerStreamResponseSchema } from "../gen/kasbridge/echo/v1/echo_pb.js";
import type { AgentApiRequestHandler } from "./agent-api-listener-options.js";

/** What the echo service saw, for assertions. */
export interface EchoObservations {
  /** Request headers of the last call. */
  lastHeaders?: Headers;
  /** HTTP/2 session of the last call (undefined over HTTP/1.1). */
  lastSession?: http2.Http2Session;
  /** Resolved when a ServerStream / Bidi handler starts. */
  streamStarted?: () => void;
  /** ServerStream waits for it after its last message: a call that stays in progress until the test lets it end. */
  holdStream?: Promise<void>;
}

/** A trivial EchoService, served through connectNodeAdapter. */
export function echoHandler(observed: EchoObservations = {}): AgentApiRequestHandler {
  const see = (ctx: HandlerContext): void => {
    observed.lastHeaders = ctx.requestHeader;
  };
  const routes = (router: ConnectRouter): void => {
    router.service(EchoService, {
      echo(req, ctx) {
        see(ctx);
        return { payload: req.payload, servedBy: "test" };
      },
      async *serverStream(req, ctx) {
        see(ctx);
        if (req.echoHeader) ctx.responseHeader.set(req.echoHeader, ctx.requestHeader.get(req.echoHeader) ?? "");
        observed.streamStarted?.();
        const payload = new Uint8Array(req.size).fill(7);
        for (let i = 0; i < req.count; i++) {
          if (ctx.signal.aborted) return;
          yield create(ServerStreamResponseSchema, { payload, index: i });
        }
        await observed.holdStream;
        if (req.count === 0) {
          // Holds the stream open until the call ends: for shutdown tests.
          await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve()));
        }
      },
      async clientStream(reqs, ctx) {
        see(ctx);
        let totalBytes = 0n;
        let messages = 0;
        for await (const r of reqs) {
          totalBytes += BigInt(r.payload.length);
          messages++;
        }
        return { totalBytes, messages };
      },
      async *bidi(reqs, ctx) {
        see(ctx);
        observed.streamStarted?.();
        for await (const r of reqs) yield create(BidiResponseSchema, { payload: r.payload });
      },
      fail(req, ctx) {
        see(ctx);
        ctx.responseHeader.set("x-fail-header", "h");
        ctx.responseTrailer.set("x-fail-trailer", "t");
        throw new ConnectError(req.message, req.code as Code);
      },
    });
  };
  const adapter = connectNodeAdapter({ routes });
  return (req, res) => {
    observed.lastSession = "stream" in req ? req.stream.session : undefined;
    adapter(req, res);
  };
}

/**
 * Records sockets, servers, HTTP/2 sessions and timers created from now on
 * (unref'd ones too, which process.getActiveResourcesInfo() does not list)
 * and reports those not yet destroyed.
 */
export function trackResources(): { live(): string[]; stop(): void } {
  // TLS, HTTP/2 and JS stream wraps are released by the GC, so only the
  // resources that are destroyed on close are watched.
  const watched = new Set(["TCPWRAP", "TCPSERVERWRAP", "Timeout"]);
  const live = new Map<number, { type: string; resource: { _onTimeout?: unknown } }>();
  const hook = createHook({
    init(id, type, _trigger, resource) {
      if (watched.has(type)) live.set(id, { type, resource: resource as { _onTimeout?: unknown } });
    },
    destroy(id) {
      live.delete(id);
    },
  }).enable();
  // mocha re-arms its own per-test timeout timer.
  const isMochaTimer = (r: { _onTimeout?: unknown }): boolean => String(r._onTimeout).includes("_timeoutError");
  return {
    live: () => [...live.values()].filter((e) => !isMochaTimer(e.resource)).map((e) => e.type).sort(),
    stop: () => hook.disable(),
  };
}
