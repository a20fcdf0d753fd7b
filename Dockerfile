# One image for the hook server and the tenant gateway (its second command, node
# dist/gateway/main.js, which the proxy Deployments run). The gateway runs as JavaScript compiled
# in a build stage (tsconfig.build.json, as `npm run build` and the tests build it): stripping its
# types at every start loaded the stripper in every proxy pod. The hook server still runs its
# TypeScript directly (type stripping). The working directory mirrors the repository, so the
# gateway's command also runs from a checkout's root once it is built.
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci && npm cache clean --force
COPY tsconfig.json tsconfig.build.json ./
COPY gateway/ gateway/
RUN npx tsc -p tsconfig.build.json

FROM node:24-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev && npm cache clean --force
COPY hooks/ hooks/
COPY gateway/ gateway/
COPY schemas/ schemas/
COPY --from=build /app/dist/ dist/
# A numeric user, so that the kubelet can verify runAsNonRoot.
USER 65532:65532
EXPOSE 8080 2379 2381
CMD ["node", "hooks/server.ts"]
