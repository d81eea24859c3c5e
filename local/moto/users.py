"""Creates IAM users in moto through its IAM API, each with inline policies and an access key.

Reads {"endpoint": URL, "users": [{"name": NAME, "policies": {POLICY_NAME: DOCUMENT}}]} on stdin;
prints {NAME: {"access_key_id": ..., "secret_access_key": ...}} on stdout. Runs as the
administrator (`test` / `test`, see server.py). One process for every user, rather than an AWS
CLI call per request: it is part of each local pipeline's start-up.
"""

import json
import sys

import boto3


def main():
    spec = json.load(sys.stdin)
    iam = boto3.client(
        "iam",
        endpoint_url=spec["endpoint"],
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    keys = {}
    for user in spec["users"]:
        name = user["name"]
        iam.create_user(UserName=name)
        for policy_name, document in user["policies"].items():
            iam.put_user_policy(UserName=name, PolicyName=policy_name, PolicyDocument=json.dumps(document))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        keys[name] = {"access_key_id": key["AccessKeyId"], "secret_access_key": key["SecretAccessKey"]}
    json.dump(keys, sys.stdout)


if __name__ == "__main__":
    main()
