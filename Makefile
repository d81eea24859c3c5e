# The two commands of the quick start:
#   make local   runs the whole pipeline on this machine against moto (the local AWS stand-in)
#   make test    runs every check and test (what CI runs)
# Both set up what they need: a Python venv with pinned tools (.venv) and the Rust workspace.
# Beside them: make serve (the online mode), make bench, make bench-trees, make bench-shards,
# make bench-images, make bench-parquet, make bench-text and make bench-serve (benchmarks).
# For AWS: make push-image (the worker image to ECR), make sam-build (the function), then
# sam deploy --guided (docs/deploy.md).

VENV    := .venv
STAMP   := $(VENV)/.installed-$(shell sha256sum requirements-dev.txt | cut -c1-12)
PYTHON  ?= python3
CARGO   ?= cargo

# The SAM CLI and checkov pin boto3 versions that conflict with each other and with .venv's AWS
# CLI, so each has a venv of its own: .tools/NAME from tools/requirements-NAME.txt; so do
# Triton's Python client and OpenAI's, for the online mode's client tests, and the Parquet readers (pyarrow,
# polars, DuckDB) that read the Parquet outputs back in the tests.
TOOLS       := sam checkov tritonclient parquet openai
TOOL_STAMPS := $(foreach tool,$(TOOLS),.tools/$(tool)/.installed-$(shell sha256sum tools/requirements-$(tool).txt | cut -c1-12))
SAM         := .tools/sam/bin/sam
# cargo-lambda and zig, for sam-build only.
LAMBDA_STAMP := .tools/lambda/.installed-$(shell sha256sum tools/requirements-lambda.txt | cut -c1-12)
# scikit-learn, onnxruntime, pandas and polars, for the model script and the benchmarks only.
MODELS_STAMP := .tools/models/.installed-$(shell sha256sum tools/requirements-models.txt | cut -c1-12)
MODELS_PYTHON := .tools/models/bin/python
CHECKOV     := .tools/checkov/bin/checkov

.PHONY: local test setup build lint lint-deploy models push-image sam-build deploy bench bench-trees bench-shards bench-images bench-parquet bench-text serve bench-serve

local: setup build
	target/debug/sluice-local run $(ARGS)

# The tests run the programs against moto with IAM enforced and record every decision in
# target/iam-audit; iam-coverage then lists what template.yaml grants that no test used.
test: setup lint
	$(CARGO) build --workspace --all-targets --locked
	rm -rf target/iam-audit
	$(CARGO) test --workspace --locked
	target/debug/sluice-local iam-coverage

setup: $(STAMP) $(TOOL_STAMPS)

$(STAMP): requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-cache-dir --upgrade pip
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-cache-dir -r requirements-dev.txt
	rm -f $(VENV)/.installed-*
	touch $@

# A tool's stamp names its requirements' hash, so a changed pin makes a new venv.
$(TOOL_STAMPS) $(LAMBDA_STAMP) $(MODELS_STAMP):
	rm -rf $(@D)
	$(PYTHON) -m venv $(@D)
	$(@D)/bin/pip install --quiet --disable-pip-version-check --no-cache-dir --upgrade pip
	$(@D)/bin/pip install --quiet --disable-pip-version-check --no-cache-dir -r tools/requirements-$(notdir $(@D)).txt
	touch $@

# The same targets as make test builds: cargo unifies dependency features over the targets it
# builds (the tests' dev-dependencies among them), so building fewer here would rebuild tract,
# tokio's users and more after make test, and make test would rebuild them again.
build:
	$(CARGO) build --workspace --all-targets --locked

lint: setup lint-deploy
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The deployment files, offline: the template (cfn-lint; SAM's own validation, which needs a
# region but no account; checkov, each skipped check justified in the template), the worker's
# Dockerfile and the shell scripts. The Rust side of the template is tests/env_contract.rs.
lint-deploy: setup
	$(VENV)/bin/cfn-lint template.yaml
	AWS_DEFAULT_REGION=us-east-1 SAM_CLI_TELEMETRY=0 $(SAM) validate --lint --template template.yaml
	$(CHECKOV) --file template.yaml --framework cloudformation --compact --quiet --skip-download
	$(VENV)/bin/hadolint Dockerfile
	$(VENV)/bin/shellcheck scripts/*.sh .ci/run

# Regenerates the example models, data and reference outputs, the model zoo, the Parquet test
# files, the small text encoders and the text models with task heads (deterministic).
models: $(MODELS_STAMP)
	$(MODELS_PYTHON) models/make_models.py
	$(MODELS_PYTHON) models/zoo.py
	$(MODELS_PYTHON) models/parquet_data.py
	$(MODELS_PYTHON) models/text_models.py
	$(MODELS_PYTHON) models/text_heads.py

# Builds the function as `sam deploy` uploads it (.aws-sam/build): SAM runs cargo-lambda, which
# cross-compiles for arm64 with zig, both from .tools/lambda.
sam-build: $(TOOL_STAMPS) $(LAMBDA_STAMP)
	PATH="$(CURDIR)/.tools/lambda/bin:$$PATH" SAM_CLI_TELEMETRY=0 $(SAM) build

# Builds the worker image (linux/amd64), pushes it to ECR and records it for the next deploy.
push-image:
	scripts/push-worker-image.sh $(TAG)

# Deploys the stack (docs/deploy.md). The first run asks for the parameters and keeps them in
# samconfig.local.toml (untracked: they are this account's); later runs deploy with them.
DEPLOY_CONFIG := samconfig.local.toml
deploy: sam-build
	SAM_CLI_TELEMETRY=0 $(SAM) deploy --config-file $(DEPLOY_CONFIG) $(if $(wildcard $(DEPLOY_CONFIG)),,--guided)

# Throughput and peak memory against pandas and polars + onnxruntime (release build; prints a table).
bench: $(MODELS_STAMP)
	$(CARGO) build --release --workspace
	$(MODELS_PYTHON) bench/bench.py $(ARGS)

# Tree ensembles (a random forest, XGBoost) on one core, against polars + onnxruntime.
bench-trees: $(MODELS_STAMP)
	$(CARGO) build --release --workspace
	$(MODELS_PYTHON) bench/bench_trees.py $(ARGS)

# One big CSV through the local pipeline with 1, 2 and 4 workers, each held to a core of its own.
bench-shards: setup
	$(CARGO) build --release --workspace
	$(VENV)/bin/python bench/bench_shards.py $(ARGS)

# Parquet to Parquet over 4M rows on one core, against polars + onnxruntime (and peak memory).
bench-parquet: $(MODELS_STAMP)
	$(CARGO) build --release --workspace
	$(MODELS_PYTHON) bench/bench_parquet.py $(ARGS)

# Text embeddings: the real all-MiniLM-L6-v2 on one core, against onnxruntime + tokenizers.
bench-text: $(MODELS_STAMP)
	$(CARGO) build --release --workspace
	$(MODELS_PYTHON) bench/bench_text.py $(ARGS)

# Images: SqueezeNet on JPEG photographs, against Pillow + onnxruntime.
bench-images: $(MODELS_STAMP)
	$(CARGO) build --release --workspace
	$(MODELS_PYTHON) bench/bench_images.py $(ARGS)

# The online mode on 127.0.0.1:8080 with the example repository, after the requests to try.
# Inference needs the key in .serve/api-key, the repository API (load, unload) the one in
# .serve/repository-api-key: both made here once, readable by their owner only.
SERVE_KEYS := .serve/api-key .serve/repository-api-key
serve: build $(SERVE_KEYS)
	@echo 'export SLUICE_API_KEY="$$(cat .serve/api-key)" SLUICE_REPOSITORY_API_KEY="$$(cat .serve/repository-api-key)"'
	@echo
	@sed -n '/^# TensorFlow/,$$p' examples/serve/requests.sh
	@echo "# gRPC on 127.0.0.1:8001 (KServe v2, TF Serving): .tools/tritonclient/bin/python examples/serve/grpc_client.py"
	@echo
	API_KEYS_FILE=.serve/api-key REPOSITORY_API_KEYS_FILE=.serve/repository-api-key \
		target/debug/worker serve --model-repository models/repository $(ARGS)

$(SERVE_KEYS):
	@mkdir -p $(@D)
	@umask 077 && $(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(32))' > $@

# Requests/s and latency of worker serve against FastAPI + onnxruntime, with wrk as the load
# generator, and over gRPC with h2load (Debian's wrk and nghttp2-client, installed when missing);
# memory under large requests.
bench-serve: $(MODELS_STAMP)
	@command -v wrk >/dev/null && command -v h2load >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk nghttp2-client; }
	$(CARGO) build --release --workspace
	$(MODELS_PYTHON) bench/bench_serve.py $(ARGS)
