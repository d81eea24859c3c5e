#!/usr/bin/env bash
# Builds the worker image for linux/amd64, pushes it to Amazon ECR (creating the repository the
# first time), and records its URI in the SSM parameter that the stack's WorkerImageUri names, so
# that the next `sam deploy` runs it. Prints the URI.
#
#   scripts/push-worker-image.sh [TAG]
#
# TAG defaults to the commit (with a timestamp when the work tree has changes). The repository
# (REPOSITORY, default sluice-worker, the stack's WorkerRepository) has immutable tags, so a task
# definition always runs the image it names; pushing a commit that is already there skips the
# build and the push and records that image again. The parameter is IMAGE_PARAMETER (default
# /sluice/worker-image-uri, the stack's default WorkerImageUri). Region and credentials are the
# AWS CLI's (AWS_REGION, AWS_PROFILE, ...). Needs the AWS CLI and Docker (with BuildKit, the
# default since Docker 23).
set -euo pipefail
cd "$(dirname "$0")/.."

repository="${REPOSITORY:-sluice-worker}"
parameter="${IMAGE_PARAMETER:-/sluice/worker-image-uri}"
if [[ $# -ge 1 ]]; then
    tag="$1"
elif git diff --quiet HEAD 2>/dev/null; then
    tag="$(git rev-parse --short=12 HEAD)"
else
    tag="$(git rev-parse --short=12 HEAD)-dirty-$(date -u +%Y%m%d%H%M%S)"
fi
region="${AWS_REGION:-${AWS_DEFAULT_REGION:-$(aws configure get region || true)}}"
if [[ -z "$region" ]]; then
    echo "no AWS region: set AWS_REGION (or configure one with 'aws configure')" >&2
    exit 2
fi
account="$(aws sts get-caller-identity --query Account --output text)"
registry="$account.dkr.ecr.$region.amazonaws.com"
uri="$registry/$repository:$tag"

if ! aws ecr describe-repositories --region "$region" --repository-names "$repository" >/dev/null 2>&1; then
    echo "creating ECR repository $repository in $region" >&2
    aws ecr create-repository --region "$region" --repository-name "$repository" \
        --image-tag-mutability IMMUTABLE \
        --image-scanning-configuration scanOnPush=true \
        --encryption-configuration encryptionType=AES256 >/dev/null
    # Keep the 20 newest images: storage is billed per GB-month.
    aws ecr put-lifecycle-policy --region "$region" --repository-name "$repository" \
        --lifecycle-policy-text '{"rules":[{"rulePriority":1,"description":"keep the 20 newest images","selection":{"tagStatus":"any","countType":"imageCountMoreThan","countNumber":20},"action":{"type":"expire"}}]}' \
        >/dev/null
fi

# Tags are immutable: the same tag is the same commit's image, already built and pushed.
if aws ecr describe-images --region "$region" --repository-name "$repository" \
    --image-ids imageTag="$tag" >/dev/null 2>&1; then
    echo "$uri is already in ECR: not building it again" >&2
else
    aws ecr get-login-password --region "$region" | docker login --username AWS --password-stdin "$registry" >&2
    docker build --platform linux/amd64 --tag "$uri" . >&2
    docker push "$uri" >&2
    size="$(docker image inspect --format '{{.Size}}' "$uri")"
    echo "pushed $uri ($((size / 1024 / 1024)) MiB uncompressed)" >&2
fi

aws ssm put-parameter --region "$region" --name "$parameter" --type String --overwrite \
    --description "The sluice worker image that the next sam deploy runs" --value "$uri" >/dev/null
echo "recorded it in the SSM parameter $parameter: the next 'sam deploy' runs it" >&2
echo "$uri"
