import type http2 from "node:http2";
import { encodeFrame } from "./grpc-frames.js";

/**
 * gRPC messages on an HTTP/2 stream that a reset never cuts.
 *
 * A gRPC peer that has read part of a length-prefixed message when RST_STREAM arrives takes the
 * message as truncated: grpc-go reports INTERNAL "unexpected EOF" instead of the reset's meaning
 * (CANCEL: Canceled), and GitLab's agentk then logs an error and backs off that tunnel. Two things
 * cut a message: a prefix and body written separately (Node hands the first to nghttp2 and keeps
 * the second in the stream's buffer, which a reset drops), and a reset while nghttp2 still holds
 * part of a message (one larger than a frame, or than the peer's flow-control window). So each
 * message is one write, and {@link resetAfterMessages} resets only once every message written so
 * far has gone out: a write's callback runs when its last byte has been written to the connection.
 */

/** How long a reset waits for the messages in flight; a peer that takes no data meanwhile is reset anyway. */
export const resetWaitMs = 10_000;

const kInFlight = Symbol("kasbridge.grpcMessagesInFlight");
const kReset = Symbol("kasbridge.grpcResetAfterMessages");

interface PendingReset {
  code: number;
  timer: NodeJS.Timeout;
}

type TrackedStream = http2.Http2Stream & { [kInFlight]?: number; [kReset]?: PendingReset };

/**
 * Writes one length-prefixed message (flag byte, length, bytes) in one piece. Returns `write()`'s
 * answer: false asks the caller to wait for "drain" (see `drained`).
 */
export function writeGrpcFrame(stream: http2.Http2Stream, message: Uint8Array, compressed = false): boolean {
  const tracked = stream as TrackedStream;
  tracked[kInFlight] = (tracked[kInFlight] ?? 0) + 1;
  // Every write's callback runs once: when sent, or with an error when the stream is destroyed.
  return stream.write(encodeFrame(message, compressed), () => messageSent(tracked));
}

/**
 * Resets `stream` with `code` (e.g. NGHTTP2_CANCEL) once every message written to it has gone out,
 * so the peer reads whole messages and then the reset; at once when none is in flight. A peer that
 * takes nothing for {@link resetWaitMs} (`maxWaitMs`) is reset regardless. The caller writes no more
 * messages after this. Idempotent; nothing happens once the stream has closed.
 */
export function resetAfterMessages(stream: http2.Http2Stream, code: number, maxWaitMs = resetWaitMs): void {
  const tracked = stream as TrackedStream;
  if (tracked.closed || tracked.destroyed || tracked[kReset]) return;
  if (!tracked[kInFlight]) {
    stream.close(code);
    return;
  }
  const timer = setTimeout(resetNow, maxWaitMs, tracked);
  timer.unref();
  tracked[kReset] = { code, timer };
  stream.once("close", forgetReset);
}

/** Messages written to `stream` whose last byte has not gone out yet (0 when none). */
export function messagesInFlight(stream: http2.Http2Stream): number {
  return (stream as TrackedStream)[kInFlight] ?? 0;
}

function messageSent(stream: TrackedStream): void {
  const inFlight = stream[kInFlight]! - 1;
  stream[kInFlight] = inFlight;
  if (inFlight === 0 && stream[kReset]) resetNow(stream);
}

function resetNow(stream: TrackedStream): void {
  const reset = stream[kReset];
  if (!reset) return;
  forgetReset.call(stream);
  if (!stream.closed && !stream.destroyed) stream.close(reset.code);
}

function forgetReset(this: TrackedStream): void {
  const reset = this[kReset];
  if (!reset) return;
  clearTimeout(reset.timer);
  this[kReset] = undefined;
  this.off("close", forgetReset);
}
