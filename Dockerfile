# One image for the agent, the controller and the init container: `node dist/bin/nodemesh.js
# <command>`, the same build as `make build`. Never built in this project's CI (no container
# engine there): docs/kubernetes.md says what has and has not been run.
#
#   docker build -t nodemesh/nodemesh:0.1.0 .

# Build: the TypeScript compiled to dist/ (npm run build, as `make build` does).
FROM node:24-bookworm-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY api api
COPY agent agent
COPY controller controller
COPY init-container init-container
COPY bin bin
RUN npm run build && npm prune --omit=dev

# Run: Node 24, iptables for the init container (iptables-restore, nft backend like current
# nodes; the legacy backend is there too for older nodes), bpftool and the prebuilt eBPF objects for
# its --mode ebpf (bpf/README.md), the compiled code and production packages.
FROM node:24-bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends iptables bpftool \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/nodemesh
COPY --from=build /src/package.json ./
COPY --from=build /src/node_modules node_modules
COPY --from=build /src/dist dist
COPY bpf/redirect.bpf.o bpf/origdst.bpf.o bpf/
ENV NODE_ENV=production
ENTRYPOINT ["node", "/opt/nodemesh/dist/bin/nodemesh.js"]
