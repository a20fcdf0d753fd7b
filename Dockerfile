# One image for the hook server, the tenant gateway (node dist/gateway/main.js, which the proxy
# Deployments run) and the backup program (node dist/gateway/backup/main.js, which the backup,
# restore, delete and schedule Jobs run). All run as JavaScript compiled in a build stage (`npm run
# build`: tsconfig.build.json, and the schemas the hooks read copied beside them into
# dist/schemas/), as the tests build them: stripping types at every start loaded the stripper into
# every process. The working directory mirrors the repository, so the commands also run from a
# checkout's root once it is built.
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci && npm cache clean --force
COPY tsconfig.json tsconfig.build.json ./
COPY gateway/ gateway/
COPY hooks/ hooks/
COPY schemas/ schemas/
RUN npm run build

FROM node:24-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev && npm cache clean --force
COPY --from=build /app/dist/ dist/
# A numeric user, so that the kubelet can verify runAsNonRoot.
USER 65532:65532
EXPOSE 8080 2379 2381
CMD ["node", "dist/hooks/server.js"]
