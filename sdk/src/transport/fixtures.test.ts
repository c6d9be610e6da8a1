// Shared test fixtures for the transport tests. Named *.test.ts so the build
// leaves it out of dist; it defines no tests itself.
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import type * as http2 from "node:http2";
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
