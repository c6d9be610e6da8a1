/**
 * Runs sections 1 and 2 of the benchmark (compiled, without tsx) and reports to the parent over IPC:
 *   -> { type: "round", round, unary, stream }   after each round of section 1
 *   -> { type: "concurrency", runs }             after section 2
 *   -> { type: "done" }
 * Configuration comes from the environment, see run.ts. To profile one path, run it alone, e.g.
 *   BENCH_TARGETS=tunnel BENCH_ONLY=perf node --cpu-prof bench/dist/bench/perf-worker.js
 * (with BENCH_ROUNDS, BENCH_UNARY_CALLS, ... set; without a parent it prints its results).
 */
import {
  measureConcurrency,
  measureStream,
  measureUnaryInterleaved,
  setupPerf,
  type ConcurrencyResult,
  type StreamResult,
  type TargetName,
  type UnaryResult,
} from "./perf.js";

const send = (msg: object) =>
  new Promise<void>((resolve) => (process.send ? process.send(msg, () => resolve()) : (console.log(JSON.stringify(msg)), resolve())));
const defaults: Record<string, number> = {
  BENCH_ROUNDS: 3,
  BENCH_UNARY_CALLS: 3000,
  BENCH_WARMUP: 500,
  BENCH_STREAM_MESSAGE_BYTES: 32768,
  BENCH_STREAM_MESSAGES: 3200,
  BENCH_CONCURRENT: 1000,
};
const env = (name: string) => Number(process.env[name] ?? defaults[name]);
// "perf" = unary + stream; "unary" or "stream" alone are for profiling.
const only = new Set((process.env.BENCH_ONLY ?? "perf,concurrency").split(","));
const doUnary = only.has("perf") || only.has("unary");
const doStream = only.has("perf") || only.has("stream");
const targets = (process.env.BENCH_TARGETS ?? "direct,passthrough,raw,tunnel").split(",") as TargetName[];

const setup = await setupPerf();
try {
  if (doUnary || doStream) {
    const rounds = env("BENCH_ROUNDS");
    const streamMessageBytes = env("BENCH_STREAM_MESSAGE_BYTES");
    const streamMessages = env("BENCH_STREAM_MESSAGES");
    for (let r = 0; r < rounds; r++) {
      // Rotate the order so drift in machine load does not always favour the same contender.
      const ordered = targets.map((_, i) => setup.targets.find((t) => t.name === targets[(i + r) % targets.length])!);
      const unary = {} as Record<TargetName, UnaryResult>;
      const stream = {} as Record<TargetName, StreamResult>;
      const warmup = r === 0 ? env("BENCH_WARMUP") : Math.ceil(env("BENCH_WARMUP") / 5);
      if (doUnary) {
        for (const [name, result] of await measureUnaryInterleaved(ordered, env("BENCH_UNARY_CALLS"), warmup)) unary[name] = result;
      }
      for (const target of doStream ? ordered : []) {
        await measureStream(target, 32, streamMessageBytes); // warm the path
        stream[target.name] = await measureStream(target, streamMessages, streamMessageBytes);
      }
      await send({ type: "round", round: r + 1, unary, stream });
    }
  }
  if (only.has("concurrency")) {
    const runs: ConcurrencyResult[] = [];
    for (let i = 0; i < 3; i++) runs.push(await measureConcurrency(setup, env("BENCH_CONCURRENT")));
    await send({ type: "concurrency", runs });
  }
} finally {
  await setup.close();
}
await send({ type: "done" });
if (process.send) process.disconnect();
