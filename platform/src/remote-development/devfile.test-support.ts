/** A devfile GitLab accepts: one editor container with an endpoint and a volume. */
export const VALID_DEVFILE = `schemaVersion: 2.2.0
components:
  - name: tooling
    attributes:
      gl/inject-editor: true
    container:
      image: registry.example/tooling:1
      command: [sleep]
      args: [infinity]
      memoryLimit: 2Gi
      env:
        - name: GREETING
          value: hello
      endpoints:
        - name: http-3000
          targetPort: 3000
        - name: debug
          targetPort: 9229
          exposure: internal
      volumeMounts:
        - name: cache
  - name: cache
    volume:
      size: 2Gi
`;
