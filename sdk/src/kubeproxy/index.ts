export { createKubernetesApiProxy } from "./kubernetes-api-proxy.js";
export type { KubernetesApiProxy, KubernetesApiProxyOptions } from "./kubernetes-api-proxy.js";
export { createAgentKubernetesApi } from "./agent-kubernetes-api.js";
export type { AgentKubernetesApiOptions } from "./agent-kubernetes-api.js";
export { ProxyAuthenticator } from "./proxy-auth.js";
export type { ProxyAuthenticatorOptions, ProxyAuthorization, ProxyCaller } from "./proxy-auth.js";
export { ciJobIdentity, ciJobImpersonation, userImpersonation, impersonationHeaders, isEmptyImpersonation } from "./impersonation.js";
export { K8sProxyError, statusJson, GITLAB_UNAUTHORIZED_HEADER, STATUS_MESSAGE_PREFIX } from "./k8s-status.js";
export { MAKE_REQUEST_METHOD } from "./http-codec.js";
