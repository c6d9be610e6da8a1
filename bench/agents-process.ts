/**
 * Many agents in one child process, for the idle-tunnel memory benchmark. Each agent is a full
 * createAgent() (its own HTTP/2 connection, registration, a pool of `minIdleTunnels` idle tunnels;
 * with BENCH_MEMORY_CONFIG=1 also its GetConfiguration stream, as agentk holds one).
 *   <- { type: "connect", url, first, count }  starts agents glagent-bench-<first>..<first+count-1>
 *                                              -> { type: "started", total }
 *   <- { type: "configured" }                  -> { type: "configured", count }  agents that have their config
 *   <- { type: "stop" }                        -> { type: "stopped" }, then exits
 */
import pino from "pino";
import { createAgent, type Agent } from "../sdk/src/agent/create-agent.js";
import { agentConfigurationAgentModule } from "../sdk/src/modules/agent_configuration/agent/configuration-watcher.js";
import { agentRegistrarAgentModule } from "../sdk/src/modules/agent_registrar/agent/agent-registrar-module.js";
import { echoAgentModule } from "../sdk/src/modules/echo/agent/echo-service.js";
import { observabilityAgentModule } from "../sdk/src/modules/observability/agent/observability-agent-module.js";

if (!process.send) throw new Error("run as a forked child");
const send = process.send.bind(process);
const minIdleTunnels = Number(process.env.BENCH_IDLE_TUNNELS ?? 2);
// With the configuration module on, each agent applies its config's log level (info when unset):
// keep only errors on stderr, whatever the level, so 2,000 agents do not flood the bench's output.
const logger = pino({ level: "error" }, { write: (line: string) => void (/"level":[56]0/.test(line) && process.stderr.write(line)) });
const watchConfiguration = process.env.BENCH_MEMORY_CONFIG === "1";
const agents: Agent[] = [];
/** Agents that received their first configuration (their stream is then open and idle). */
let configured = 0;

process.on("message", (msg: { type: string; url?: string; first?: number; count?: number }) => {
  void (async () => {
    if (msg.type === "connect") {
      for (let i = 0; i < msg.count!; i++) {
        const agent = createAgent({
          kasAddress: msg.url!,
          token: `glagent-bench-${msg.first! + i}`,
          logger,
          podName: `bench-${msg.first! + i}`,
          pool: { minIdleTunnels },
          // Without the configuration module, KAS would answer GetConfiguration with 404 and every
          // agent would retry it with backoff for the whole run: those calls, in flight at a sample,
          // would be counted as tunnel memory.
          modules: [
            agentRegistrarAgentModule(),
            echoAgentModule(),
            ...(watchConfiguration ? [agentConfigurationAgentModule(), observabilityAgentModule()] : []),
          ],
          onConfiguration: () => configured++,
        });
        agent.start();
        agents.push(agent);
        // Pace the dials a little so KAS is not hit by thousands of handshakes in one tick.
        if (i % 50 === 49) await new Promise((resolve) => setTimeout(resolve, 10));
      }
      send({ type: "started", total: agents.length });
    } else if (msg.type === "configured") {
      send({ type: "configured", count: configured });
    } else if (msg.type === "stop") {
      await Promise.all(agents.map((a) => a.stop(500)));
      send({ type: "stopped" });
      process.disconnect();
      process.exit(0);
    }
  })();
});
send({ type: "ready" });
