# Cluster targets: images, manifests, submitting runs. Included by the top-level Makefile, which
# defines VENV and PY. Every variable can be overridden: make images REGISTRY=ghcr.io/me TAG=v1
VENV ?= .venv
PY ?= $(VENV)/bin/python

# docker if present, else podman; empty if neither (the image targets then say so).
CONTAINER_TOOL ?= $(shell command -v docker >/dev/null 2>&1 && echo docker || (command -v podman >/dev/null 2>&1 && echo podman))
REGISTRY ?=
TAG ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo dev)
PLATFORM ?= linux/amd64
TRAINER_IMAGE ?= $(REGISTRY)/mammosynth-trainer:$(TAG)
SERVER_IMAGE ?= $(REGISTRY)/mammosynth-server:$(TAG)
HADOLINT ?= $(VENV)/bin/hadolint
KUBECTL ?= kubectl
OVERLAY ?= local
OVERLAYS ?= local gpu local-gpu
NAMESPACE ?= mammosynth
KFP_HOST ?=
PRESET ?= cbis-ddsm
SOURCE ?=
SUBMIT_ARGS ?=
PIPELINE_PACKAGE ?= build/mammosynth-study.yaml
# Checked by `make deploy`; kustomize itself always reads manifests/credentials/minio.env.
CREDENTIALS_ENV ?= manifests/credentials/minio.env
GPU_POOL ?= manifests/components/gpu/gpu-pool.yaml

.PHONY: images lint-images lock-images lock-cuda render deploy submit compile-gpu

define require_container_tool
	@if [ -z "$(CONTAINER_TOOL)" ]; then \
	  echo "make $@: neither docker nor podman found; install one or pass CONTAINER_TOOL=<tool>" >&2; exit 2; fi
endef

define require_registry
	@if [ -z "$(REGISTRY)" ]; then \
	  echo "usage: make $@ REGISTRY=<registry/namespace> [TAG=$(TAG)] [CONTAINER_TOOL=$(or $(CONTAINER_TOOL),docker)]" >&2; \
	  echo "  e.g. make $@ REGISTRY=ghcr.io/<you>  (the cluster must be able to pull from it)" >&2; exit 2; fi
endef

images: ## build and push the trainer and server images (REGISTRY=... required, TAG, CONTAINER_TOOL)
	$(require_registry)
	$(require_container_tool)
	$(CONTAINER_TOOL) build --platform $(PLATFORM) -f images/trainer.Dockerfile -t $(TRAINER_IMAGE) .
	$(CONTAINER_TOOL) build --platform $(PLATFORM) -f images/server.Dockerfile -t $(SERVER_IMAGE) .
	$(CONTAINER_TOOL) push $(TRAINER_IMAGE)
	$(CONTAINER_TOOL) push $(SERVER_IMAGE)
	@echo "pushed $(TRAINER_IMAGE) and $(SERVER_IMAGE)"
	@echo "compile with MAMMOSYNTH_TRAINER_IMAGE=$(TRAINER_IMAGE); deploy with make deploy REGISTRY=$(REGISTRY) TAG=$(TAG)"

lint-images: ## hadolint both Dockerfiles
	$(HADOLINT) images/trainer.Dockerfile images/server.Dockerfile

lock-images: ## regenerate images/requirements-*.txt from the test virtualenv
	$(PY) images/lock.py

lock-cuda: ## re-resolve and pin the trainer's NVIDIA wheels (images/constraints-cuda.txt; needs the index)
	$(PY) images/lock.py --cuda

# A throwaway overlay on top of the chosen one, so the tracked manifests never carry a registry or
# a namespace: pipeline pods run in the KFP namespace (a profile namespace in multi-user Kubeflow,
# `kubeflow` for standalone KFP) and need the Secret, ConfigMap and service account there. The
# replacement moves the RoleBinding's subjects KFP owns (pipeline-runner, default-editor) to NAMESPACE too.
build/deploy/$(OVERLAY)/kustomization.yaml: FORCE
	@mkdir -p $(@D)
	@printf '%s\n' \
	  'apiVersion: kustomize.config.k8s.io/v1beta1' 'kind: Kustomization' 'namespace: $(NAMESPACE)' \
	  'resources:' '  - ../../../manifests/overlays/$(OVERLAY)' \
	  'images:' '  - name: mammosynth-server' '    newName: $(REGISTRY)/mammosynth-server' '    newTag: "$(TAG)"' \
	  'replacements:' '  - source: {kind: RoleBinding, name: mammosynth-pipeline-runner, fieldPath: metadata.namespace}' \
	  '    targets:' '      - select: {kind: RoleBinding, name: mammosynth-pipeline-runner}' \
	  '        fieldPaths: ["subjects.[name=pipeline-runner].namespace", "subjects.[name=default-editor].namespace"]' > $@

render: ## render every overlay to build/manifests/<overlay>.yaml (offline)
	@command -v $(KUBECTL) >/dev/null || { echo "make $@: $(KUBECTL) not found; install kubectl >= 1.27 or pass KUBECTL=" >&2; exit 2; }
	@mkdir -p build/manifests
	@for overlay in $(OVERLAYS); do \
	  $(KUBECTL) kustomize manifests/overlays/$$overlay > build/manifests/$$overlay.yaml.tmp \
	    && mv build/manifests/$$overlay.yaml.tmp build/manifests/$$overlay.yaml \
	    && echo "build/manifests/$$overlay.yaml" || exit 1; \
	done

deploy: ## apply credentials + manifests/overlays/$(OVERLAY) to NAMESPACE (OVERLAY=local|gpu|local-gpu, REGISTRY, TAG)
	$(require_registry)
	@if [ ! -s "$(CREDENTIALS_ENV)" ] || grep -Eq '^[A-Z_]+=$$' "$(CREDENTIALS_ENV)"; then \
	  echo "make deploy: fill in $(CREDENTIALS_ENV) first:" >&2; \
	  echo "  cp manifests/credentials/minio.env.example $(CREDENTIALS_ENV) && \$$EDITOR $(CREDENTIALS_ENV)" >&2; exit 2; fi
	@$(MAKE) --no-print-directory build/deploy/$(OVERLAY)/kustomization.yaml OVERLAY=$(OVERLAY)
	$(KUBECTL) create namespace $(NAMESPACE) --dry-run=client -o yaml | $(KUBECTL) apply -f -
	@mkdir -p build/deploy/credentials
	@printf '%s\n' 'apiVersion: kustomize.config.k8s.io/v1beta1' 'kind: Kustomization' \
	  'namespace: $(NAMESPACE)' 'resources:' '  - ../../../manifests/credentials' > build/deploy/credentials/kustomization.yaml
	$(KUBECTL) apply -k build/deploy/credentials
	$(KUBECTL) apply -k build/deploy/$(OVERLAY)
	@echo "waiting for the bucket (job/mammosynth-bucket-setup)..."
	$(KUBECTL) -n $(NAMESPACE) wait --for=condition=complete --timeout=300s job/mammosynth-bucket-setup

compile-gpu: ## compile with GPU placement (MAMMOSYNTH_GPU=1): GPU pool of $(GPU_POOL), image from REGISTRY/TAG
	env $$($(PY) -m mammosynth.cluster.submit --gpu-env $(GPU_POOL) | xargs) MAMMOSYNTH_GPU=1 \
	  $(MAKE) --no-print-directory compile

submit: ## create a KFP run of build/mammosynth-study.yaml (KFP_HOST=..., PRESET, SOURCE, SUBMIT_ARGS)
	@if [ -z "$(KFP_HOST)" ]; then \
	  echo "usage: make submit KFP_HOST=<url> [PRESET=$(PRESET)] [SOURCE=s3://mammosynth/cbis-ddsm] [SUBMIT_ARGS=...]" >&2; \
	  echo "  e.g. kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8080:80 &  make submit KFP_HOST=http://localhost:8080" >&2; \
	  exit 2; fi
	$(PY) -m mammosynth.cluster.submit --host $(KFP_HOST) --package $(PIPELINE_PACKAGE) --preset $(PRESET) \
	  $(if $(SOURCE),--param source=$(SOURCE)) $(SUBMIT_ARGS)

.PHONY: FORCE
FORCE:
