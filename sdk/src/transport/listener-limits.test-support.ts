// Checks that a listener enforces its ListenerLimits, from the outside, over real sockets.
import http2 from "node:http2";
import net from "node:net";
import { expect } from "chai";
import type { Cleanup } from "@kasbridge/testing/cleanup";
import { HUNG_MS, within } from "@kasbridge/testing/wait";
import { connectSocket, type RawHttp2Target } from "../grpc/raw-http2.test-support.js";

/** How to reach the listener under test (TLS: certificates are not checked). */
export type LimitsTarget = RawHttp2Target;

function closed(socket: net.Socket, what: string): Promise<void> {
  return within(HUNG_MS, new Promise<void>((resolve) => (socket.destroyed ? resolve() : socket.once("close", () => resolve()))), what);
}

function h2connect(target: LimitsTarget, cleanup: Cleanup): http2.ClientHttp2Session {
  const scheme = target.tls ? "https" : "http";
  const session = cleanup.track(http2.connect(`${scheme}://${target.host ?? "127.0.0.1"}:${target.port}`, { rejectUnauthorized: false }));
  session.on("error", () => {});
  return session;
}

/** The SETTINGS_MAX_CONCURRENT_STREAMS the listener advertises. */
export async function advertisedMaxConcurrentStreams(target: LimitsTarget, cleanup: Cleanup): Promise<number | undefined> {
  const session = h2connect(target, cleanup);
  const settings = await within(HUNG_MS, new Promise<http2.Settings>((resolve) => session.once("remoteSettings", resolve)), "SETTINGS");
  session.close();
  return settings.maxConcurrentStreams;
}

/** An HTTP/2 session that opens no stream is sent GOAWAY (and closed). */
export async function expectSilentHttp2SessionClosed(target: LimitsTarget, cleanup: Cleanup): Promise<void> {
  const session = h2connect(target, cleanup);
  await within(HUNG_MS, new Promise((resolve) => session.once("close", resolve)), "the HTTP/2 session that opened no stream to close");
}

/** An HTTP/1.1 connection that never completes its request head is closed. */
export async function expectSlowHeadClosed(target: LimitsTarget, cleanup: Cleanup): Promise<void> {
  const socket = cleanup.track(await connectSocket(target, ["http/1.1"]));
  socket.resume(); // drain the answer (a 408), so "close" can come
  socket.write("GET / HTTP/1.1\r\nHost: kas\r\nX-Slow: ");
  await closed(socket, "the HTTP/1.1 connection without a complete head to close");
}

/** With `max` connections open (and held), one more is closed at once; returns when it has been. */
export async function expectConnectionsBeyondMaxClosed(target: LimitsTarget, max: number, cleanup: Cleanup): Promise<void> {
  const held: net.Socket[] = [];
  for (let i = 0; i < max; i++) held.push(cleanup.track((await connectSocket({ ...target, tls: false })).resume()));
  const extra = cleanup.track(net.connect(target.port, target.host ?? "127.0.0.1"));
  extra.on("error", () => {});
  await closed(extra, "the connection beyond maxConnections to close");
  for (const socket of held) expect(socket.destroyed, "a connection within the limit").to.equal(false);
  for (const socket of held) socket.destroy();
}
