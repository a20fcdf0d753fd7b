# One image for the hook server and the tenant gateway (its second command, node gateway/main.ts,
# which the proxy Deployments run). Node runs the TypeScript directly (type stripping): the
# production install is enough and nothing is compiled. The working directory mirrors the
# repository, so the gateway's command also runs from a checkout's root.
FROM node:24-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev && npm cache clean --force
COPY hooks/ hooks/
COPY gateway/ gateway/
COPY schemas/ schemas/
# A numeric user, so that the kubelet can verify runAsNonRoot.
USER 65532:65532
EXPOSE 8080 2379 2381
CMD ["node", "hooks/server.ts"]
