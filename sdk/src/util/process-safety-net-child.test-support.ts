// A process with the safety net (or without, with argv "--bare") that then throws, rejects, and
// reports whether it is still alive: for process-safety-net.test.ts.
import { Registry } from "prom-client";
import pino from "pino";
import { installProcessSafetyNet } from "./process-safety-net.js";

const metrics = new Registry();
if (!process.argv.includes("--bare")) installProcessSafetyNet({ logger: pino({ name: "child" }), metrics, metricPrefix: "child" });
setTimeout(() => {
  throw new Error("thrown from a timer");
}, 1);
setTimeout(() => void Promise.reject(new Error("rejected, never handled")), 2);
setTimeout(async () => {
  process.stdout.write(`${await metrics.metrics()}\nALIVE\n`);
  process.exit(0);
}, 50);
