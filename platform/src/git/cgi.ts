import { spawn } from "node:child_process";
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Readable } from "node:stream";
import type { Logger } from "pino";
import { drainRefusedBody } from "../api/body-limit.js";

export interface RunCgiOptions {
  command: string;
  args?: readonly string[];
  /** The complete environment of the CGI process (CGI meta-variables included). */
  env: Record<string, string>;
  /** The request: its body is streamed to the process's stdin (unless `stdin` is given). */
  req: IncomingMessage;
  /**
   * What to stream to stdin instead of `req` itself: the body after decoding or limiting. When it
   * fails (a limit is reached, bad gzip), stdin is closed (EOF) as for a client gone, the process
   * is left to exit, and the result's `inputError` says why; the rest of the request is not read.
   */
  stdin?: Readable;
  /**
   * Keep the process's status, headers and output back until the whole input has been read (up to
   * `maxHeldBytes`, then it goes out anyway), so that a body found bad at its end can still be
   * answered with an error status: with `inputError`, the held output is discarded and
   * `headersSent` is false. Default false.
   */
  holdOutputUntilInputEnds?: boolean;
  /** See holdOutputUntilInputEnds. Default 1 MiB. */
  maxHeldBytes?: number;
  /** Receives the status and headers the process prints, then its output. Not ended here. */
  res: ServerResponse;
  logger: Logger;
  /**
   * When the client goes away first, the process's stdin is closed (EOF) and its output discarded;
   * it then has this long to exit by itself before its process group gets SIGTERM. Git cleans up
   * after itself on EOF (receive-pack removes its object quarantine, which SIGTERM leaves behind),
   * and a push whose data had all arrived completes. Default 0: SIGTERM at once.
   */
  exitGraceMs?: number;
  /** After SIGTERM, how long before SIGKILL. Default 5000 ms. */
  killGraceMs?: number;
  /** Largest header block accepted from the process. Default 64 KiB. */
  maxHeaderBytes?: number;
}

export interface CgiResult {
  exitCode: number | null;
  signal: NodeJS.Signals | null;
  /** The process printed a complete header block, so the response's status and headers are sent. */
  headersSent: boolean;
  /** The client disconnected before the process finished (the process was then killed). */
  clientGone: boolean;
  /** Why the input (`stdin`) failed, if it did. */
  inputError?: Error;
  /** The start of what the process wrote to stderr. */
  stderr: string;
}

const USE_PROCESS_GROUP = process.platform !== "win32";
const HEADER_END = Buffer.from("\r\n\r\n");
const HEADER_END_LF = Buffer.from("\n\n");

/**
 * Runs a CGI program (RFC 3875) for one request, streaming both ways: the request body flows to
 * its stdin and its stdout to the response, with backpressure, so nothing is held in memory
 * beyond a chunk. The `Status:` header sets the status code. The program runs in its own process
 * group, so everything it starts (git-http-backend runs upload-pack, pack-objects, hooks) is
 * killed with it when the client disconnects.
 *
 * Resolves once the process has exited and its output is written (the response is left open for
 * the caller to end). Rejects only when the program cannot be started.
 */
export function runCgi(options: RunCgiOptions): Promise<CgiResult> {
  const { req, res, logger } = options;
  const killGraceMs = options.killGraceMs ?? 5000;
  const exitGraceMs = options.exitGraceMs ?? 0;
  const maxHeaderBytes = options.maxHeaderBytes ?? 64 * 1024;

  const input = options.stdin ?? req;
  const maxHeldBytes = options.maxHeldBytes ?? 1024 * 1024;

  return new Promise<CgiResult>((resolve, reject) => {
    const child = spawn(options.command, options.args ?? [], {
      env: options.env,
      stdio: ["pipe", "pipe", "pipe"],
      detached: USE_PROCESS_GROUP,
      windowsHide: true,
    });
    let exited = false;
    let clientGone = false;
    let headersSent = false;
    let killTimer: NodeJS.Timeout | undefined;
    let stderr = "";
    let inputError: Error | undefined;
    /** Output kept back while the input is still arriving (holdOutputUntilInputEnds). */
    let held: Buffer[] | undefined = options.holdOutputUntilInputEnds ? [] : undefined;
    let heldBytes = 0;

    const kill = (signal: NodeJS.Signals) => {
      if (exited) return;
      try {
        if (USE_PROCESS_GROUP && child.pid !== undefined) process.kill(-child.pid, signal);
        else child.kill(signal);
      } catch {
        // already gone
      }
    };
    const terminate = () => {
      kill("SIGTERM");
      killTimer = setTimeout(() => kill("SIGKILL"), killGraceMs);
      killTimer.unref();
    };
    /** Stops the input (EOF on stdin) and gives the process exitGraceMs to finish by itself. */
    const stopInput = () => {
      input.unpipe(child.stdin);
      child.stdin.destroy(); // EOF
      if (killTimer) return;
      if (exitGraceMs > 0) {
        killTimer = setTimeout(terminate, exitGraceMs);
        killTimer.unref();
      } else {
        terminate();
      }
    };
    const abort = (why: string) => {
      if (exited || clientGone) return;
      clientGone = true;
      logger.debug({ why }, "client gone; stopping the CGI process");
      held = undefined;
      child.stdout.resume(); // discard the rest, so the process never blocks on a full pipe
      stopInput();
    };
    const onResClose = () => {
      if (!res.writableFinished) abort("response closed");
    };
    const onReqError = () => abort("request error");
    const onInputError = (err: Error) => {
      if (exited || clientGone || inputError) return;
      inputError = err;
      logger.debug({ err }, "request body refused; stopping the CGI process");
      if (held) held = []; // the caller answers instead; whatever the process says is dropped
      stopInput();
    };
    const onInputEnd = () => releaseHeld();
    res.on("close", onResClose);
    req.on("error", onReqError);
    if (input !== req) input.on("error", onInputError);
    input.on("end", onInputEnd);

    child.on("error", (err) => {
      exited = true;
      cleanup();
      reject(err);
    });

    // Request body -> stdin.
    child.stdin.on("error", () => {
      // EPIPE: the program stopped reading (it answered early, or died); its exit tells the rest.
    });
    input.pipe(child.stdin);

    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (text: string) => {
      if (stderr.length < 4096) stderr += text;
    });

    // stdout -> (held until the input is complete) -> header block, then the body.
    let header: Buffer | undefined = Buffer.alloc(0);
    const write = (chunk: Buffer) => {
      if (res.destroyed) return; // the client is gone: discard
      if (!res.write(chunk)) {
        child.stdout.pause();
        res.once("drain", () => child.stdout.resume());
      }
    };
    const releaseHeld = () => {
      if (!held || inputError) return;
      const chunks = held;
      held = undefined;
      for (const chunk of chunks) output(chunk);
    };
    child.stdout.on("data", (chunk: Buffer) => {
      if (inputError || clientGone) return;
      if (!held) {
        output(chunk);
        return;
      }
      held.push(chunk);
      heldBytes += chunk.length;
      if (heldBytes > maxHeldBytes) releaseHeld(); // never block the process on our account
    });
    const output = (chunk: Buffer) => {
      if (header === undefined) {
        write(chunk);
        return;
      }
      header = Buffer.concat([header, chunk]);
      let end = header.indexOf(HEADER_END);
      let sepLength = HEADER_END.length;
      const lfEnd = header.indexOf(HEADER_END_LF);
      if (lfEnd >= 0 && (end < 0 || lfEnd < end)) {
        end = lfEnd;
        sepLength = HEADER_END_LF.length;
      }
      if (end < 0) {
        if (header.length > maxHeaderBytes) {
          logger.warn({ bytes: header.length }, "CGI header block too large");
          header = undefined;
          kill("SIGKILL");
        }
        return;
      }
      const block = header.subarray(0, end).toString("latin1");
      const rest = header.subarray(end + sepLength);
      header = undefined;
      if (!sendHeaders(block)) {
        kill("SIGKILL");
        return;
      }
      if (rest.length > 0) write(rest);
    };

    const sendHeaders = (block: string): boolean => {
      if (res.destroyed) return false;
      let status = 200;
      const headers: Array<[string, string]> = [];
      for (const line of block.split(/\r?\n/)) {
        if (line === "") continue;
        const colon = line.indexOf(":");
        if (colon <= 0) {
          logger.warn({ line: line.slice(0, 100) }, "malformed CGI header line");
          return false;
        }
        const name = line.slice(0, colon).trim();
        const value = line.slice(colon + 1).trim();
        if (name.toLowerCase() === "status") {
          const code = Number(/^(\d{3})/.exec(value)?.[1]);
          if (!(code >= 200 && code <= 599)) return false;
          status = code;
        } else {
          headers.push([name, value]);
        }
      }
      try {
        res.statusCode = status;
        for (const [name, value] of headers) res.appendHeader(name, value);
        res.flushHeaders();
      } catch (err) {
        logger.warn({ err }, "invalid CGI header");
        return false;
      }
      headersSent = true;
      return true;
    };

    const cleanup = () => {
      if (killTimer) clearTimeout(killTimer);
      res.off("close", onResClose);
      req.off("error", onReqError);
      input.off("error", onInputError);
      input.off("end", onInputEnd);
      input.unpipe(child.stdin);
    };

    child.on("close", (exitCode, signal) => {
      exited = true;
      releaseHeld(); // the process answered without reading all of its input
      cleanup();
      // Whatever the program did not read must not stay in the socket: it is read off, within
      // bounds (a client may send forever). A refused body is left to the caller's answer.
      if (!req.complete && !inputError) drainRefusedBody(req);
      resolve({ exitCode, signal, headersSent, clientGone, stderr, inputError });
    });
  });
}
