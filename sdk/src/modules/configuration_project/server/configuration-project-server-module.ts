import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  AgentConfigFileSchema,
  ConfigurationProject,
  type AgentConfigFile,
  type ListAgentConfigFilesRequest,
} from "../../../gen/gitlab/agent/configuration_project/rpc/rpc_pb.js";
import { apiUnaryMethod } from "../../../grpc/api-unary-method.js";
import type { KasModule } from "../../../kas/kas-module.js";
import { platformCall } from "../../../kas/platform-call.js";
import type { PlatformClient } from "../../../platform-client/platform-client.js";

export interface ConfigurationProjectServerModuleOptions {
  /** Reads the project's repository (kasbridge's stand-in for Gitaly). */
  platform: PlatformClient;
}

/** GitLab's agent name: lowercase letters, digits and '-', at most 63, starting and ending with a letter or digit. */
const AGENT_NAME_RE = /^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$/;
const CONFIG_FILE_RE = /^\.gitlab\/agents\/([^/]+)\/config\.yaml$/;
/** The platform's repositories are `project-<id>` (GitLab's gl_repository). */
const GL_REPOSITORY_RE = /^project-([1-9][0-9]{0,15})$/;

/**
 * KAS half of `gitlab.agent.configuration_project.rpc.ConfigurationProject/ListAgentConfigFiles`
 * on the internal API: GitLab's Rails asks which agents a configuration project defines — every
 * `.gitlab/agents/<name>/config.yaml` at the branch, with a valid agent name. GitLab's KAS reads
 * Gitaly at the repository it is given; kasbridge reads the platform's repository of that project
 * (`gl_repository` `project-<id>`).
 */
export function configurationProjectServerModule(options: ConfigurationProjectServerModuleOptions): KasModule {
  const { platform } = options;
  return {
    name: "configuration_project",
    apiMethods() {
      return [
        apiUnaryMethod({
          method: ConfigurationProject.method.listAgentConfigFiles,
          async handle(request: ListAgentConfigFilesRequest, signal) {
            const projectId = validate(request);
            if (!platform.resolveRepositoryRevision || !platform.listRepositoryFiles) {
              throw new ConnectError("the platform client cannot read repositories", Code.Unimplemented);
            }
            const revision = request.defaultBranch === "" ? "HEAD" : `refs/heads/${request.defaultBranch}`;
            const commit = await platformCall(() => platform.resolveRepositoryRevision!(projectId, revision, signal), "resolve the branch");
            // An empty repository, or a branch that does not exist, defines no agents.
            if (commit === undefined) return { configFiles: [] };
            const files = await platformCall(() => platform.listRepositoryFiles!(projectId, commit, signal), "list the repository");
            return { configFiles: files.flatMap(agentConfigFile) };
          },
        }),
      ];
    },
  };
}

function agentConfigFile(path: string): AgentConfigFile[] {
  const name = CONFIG_FILE_RE.exec(path)?.[1];
  return name !== undefined && AGENT_NAME_RE.test(name) ? [create(AgentConfigFileSchema, { name: path, agentName: name })] : [];
}

/** GitLab's required fields, then the project the repository is. */
function validate(request: ListAgentConfigFilesRequest): number {
  if (!request.repository) throw new ConnectError("invalid ListAgentConfigFilesRequest.Repository: value is required", Code.InvalidArgument);
  if (!request.gitalyInfo) throw new ConnectError("invalid ListAgentConfigFilesRequest.GitalyInfo: value is required", Code.InvalidArgument);
  const id = GL_REPOSITORY_RE.exec(request.repository.glRepository)?.[1];
  if (id === undefined) throw new ConnectError(`unknown repository ${JSON.stringify(request.repository.glRepository)}: expected project-<id>`, Code.NotFound);
  return Number(id);
}
