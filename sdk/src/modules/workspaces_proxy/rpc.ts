import { WorkspacesProxyService } from "../../gen/kasbridge/workspaces_proxy/v1/workspaces_proxy_pb.js";

/** The tunnel method of the workspace proxy: `/kasbridge.workspaces_proxy.v1.WorkspacesProxyService/MakeRequest`. */
export const WORKSPACES_PROXY_METHOD = `/${WorkspacesProxyService.typeName}/${WorkspacesProxyService.method.makeRequest.name}`;

/** The label every object of a workspace carries: the id of the agent that runs it. */
export const AGENT_ID_LABEL = "agent.gitlab.com/id";
/** The annotation with the workspace's id on every object of a workspace. */
export const WORKSPACE_ID_ANNOTATION = "workspaces.gitlab.com/id";
