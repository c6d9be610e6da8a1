// Shared test fixtures for the transport tests. Named *.test.ts so the build
// leaves it out of dist; it defines no tests itself.
import { createHook } from "node:async_hooks";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import type * as http2 from "node:http2";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
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

/** A self-signed certificate for localhost / 127.0.0.1 / ::1, made with openssl. */
export interface TestCertificate {
  cert: string;
  key: string;
}

let cached: TestCertificate | undefined;

export function selfSignedCertificate(): TestCertificate {
  if (cached) return cached;
  const dir = mkdtempSync(join(tmpdir(), "kasbridge-cert-"));
  try {
    execFileSync(
      "openssl",
      [
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-days", "2", "-subj", "/CN=localhost",
        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1",
        "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem"),
      ],
      { stdio: "pipe" },
    );
    cached = { cert: readFileSync(join(dir, "cert.pem"), "utf8"), key: readFileSync(join(dir, "key.pem"), "utf8") };
    return cached;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Rejects after ms; for bounding waits in tests. */
export function within<T>(ms: number, p: Promise<T>, what = "operation"): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms);
    }),
  ]);
}

/** The error a promise rejects with. */
export async function rejection(p: Promise<unknown>): Promise<ConnectError> {
  try {
    await p;
  } catch (err) {
    return ConnectError.from(err);
  }
  throw new Error("expected a rejection");
}

/**
 * A TCP proxy to 127.0.0.1:targetPort that can freeze: while frozen it drops
 * bytes both ways but keeps connections open, like a peer that hangs or a
 * network path that went black.
 */
export interface FreezableProxy {
  readonly port: number;
  frozen: boolean;
  close(): Promise<void>;
}

export async function freezableProxy(targetPort: number): Promise<FreezableProxy> {
  const sockets = new Set<net.Socket>();
  const state = { frozen: false };
  const server = net.createServer((a) => {
    const b = net.connect(targetPort, "127.0.0.1");
    for (const [from, to] of [[a, b], [b, a]] as const) {
      sockets.add(from);
      from.on("error", () => {});
      from.on("data", (d: Buffer) => {
        if (!state.frozen) to.write(d);
      });
      from.on("close", () => {
        sockets.delete(from);
        to.destroy();
      });
    }
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    get frozen() {
      return state.frozen;
    },
    set frozen(v: boolean) {
      state.frozen = v;
    },
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
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
