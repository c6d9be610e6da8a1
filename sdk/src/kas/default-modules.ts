import { agentRegistrarServerModule } from "../modules/agent_registrar/server/agent-registrar-module.js";
import type { KasModule } from "./kas-module.js";

/** The modules of a KAS assembled without a list: agent registration only. */
export function defaultKasModules(): KasModule[] {
  return [agentRegistrarServerModule()];
}
