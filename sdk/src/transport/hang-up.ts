import type { Duplex } from "node:stream";

/** How long a refused peer gets to read our answer before its socket is destroyed. */
const ANSWER_FLUSH_TIMEOUT_MS = 5_000;

/**
 * Sends a minimal HTTP/1.1 error response and closes the connection once it
 * is flushed. Destroying right after end() could drop the answer (a TLS
 * socket, a full send buffer); waiting on a peer that never reads must not
 * keep the socket forever either.
 */
export function answerAndHangUp(socket: Duplex, status: string, body = ""): void {
  if (socket.destroyed) return;
  // Whoever owned the socket may have detached its listeners (upgrades do);
  // a reset now must not become an uncaught exception.
  socket.on("error", () => socket.destroy());
  if (!socket.writable) {
    socket.destroy();
    return;
  }
  socket.once("finish", () => socket.destroy());
  const timed = socket as Duplex & { setTimeout?: (ms: number, cb: () => void) => void };
  timed.setTimeout?.(ANSWER_FLUSH_TIMEOUT_MS, () => socket.destroy());
  socket.end(
    `HTTP/1.1 ${status}\r\n` +
      "Connection: close\r\n" +
      "Content-Type: text/plain; charset=utf-8\r\n" +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n` +
      body,
  );
}
