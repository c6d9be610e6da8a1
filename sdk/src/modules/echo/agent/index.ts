// @kasbridge/sdk/modules/echo/agent: kasbridge's diagnostics service (kasbridge.echo.v1.EchoService).
export { echoAgentModule, echoService } from "./echo-service.js";
