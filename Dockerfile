# The hook server image. tsx is a runtime dependency (the hooks run as TypeScript), so the
# production install is enough; nothing is compiled.
FROM node:24-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev && npm cache clean --force
COPY hooks/ hooks/
COPY schemas/ schemas/
# A numeric user, so that the kubelet can verify runAsNonRoot.
USER 65532:65532
EXPOSE 8080
CMD ["node", "--import", "tsx", "hooks/server.ts"]
