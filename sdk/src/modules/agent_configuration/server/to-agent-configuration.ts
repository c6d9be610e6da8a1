import { create } from "@bufbuild/protobuf";
import {
  AgentConfigurationSchema,
  type AgentConfiguration,
  type ConfigurationFile,
} from "../../../gen/gitlab/agent/agentcfg/agentcfg_pb.js";
import type { AgentInfo } from "../../../platform-client/platform-client.js";

/** Commit id sent while an agent has no accepted config yet (agentk requires a non-empty id). */
export const noConfigCommitId = "0000000000000000000000000000000000000000";

/**
 * What agentk receives for a config file: the file's sections plus identity, as GitLab's KAS
 * builds it. user_access stays on the server (it is KAS's business, not the agent's).
 */
export function toAgentConfiguration(config: ConfigurationFile, agent: AgentInfo, gitlabExternalUrl = ""): AgentConfiguration {
  return create(AgentConfigurationSchema, {
    gitops: config.gitops,
    observability: config.observability,
    agentId: BigInt(agent.agentId),
    projectId: BigInt(agent.projectId),
    ciAccess: config.ciAccess,
    containerScanning: config.containerScanning,
    projectPath: agent.projectPath,
    remoteDevelopment: config.remoteDevelopment,
    flux: config.flux,
    gitlabExternalUrl,
  });
}
