"""moto's server with IAM enforced the way AWS enforces it, for sluice's local run and tests.

moto checks a request's signature and its caller's IAM policies once INITIAL_NO_AUTH_ACTION_COUNT
requests have passed; this launcher sets that to 0 and closes the gaps between moto's checks and
AWS's that sluice's policies meet:

- An administrator, the `sluice-admin` user, holds the access key `test` / `test`: the harness's
  own calls (provisioning, uploads, reading outputs) and the AWS CLI run as it, as a person at
  their laptop does. The programs run as users whose policies are template.yaml's role policies.
- AWS authorises batch operations as their single forms (SendMessageBatch as sqs:SendMessage);
  moto checks the operation's own name.
- Where moto knows no resource for a request (ECS, EventBridge), it compares the policy's
  resources with "*", which nothing but "*" matches; here the action alone is checked then.
  S3 and SQS requests are checked against their bucket, object and queue ARNs.
- S3's AccessDenied names the caller, action and resource, as AWS's does; the JSON protocols' (SQS,
  ECS, EventBridge) is AccessDeniedException in JSON, as AWS answers them, not moto's XML, which
  their SDKs cannot read the code of.
- Every decision is appended to the JSON Lines file $SLUICE_IAM_AUDIT, if set, as
  {"user", "action", "resource", "allowed"}: the IAM coverage check reads these files.

Usage: python local/moto/server.py [moto_server's arguments]
"""

import json
import os
import sys
import threading

from moto import server, settings
from moto.core.authorization import ActionAuthenticatorMixin
from moto.iam import access_control
from moto.iam.models import iam_backends
from moto.core.exceptions import JsonRESTError
from moto.s3.exceptions import S3AccessDeniedError, S3ClientError

ACCOUNT_ID = "123456789012"
ADMIN_USER = "sluice-admin"
ADMIN_KEY = ("test", "test")

# Operations that AWS authorises as another action of the same service.
AUTHORISED_AS = {
    "sqs:SendMessageBatch": "sqs:SendMessage",
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
}

_audit_lock = threading.Lock()
_audit_path = os.environ.get("SLUICE_IAM_AUDIT")


def audit(user, action, resource, allowed):
    if not _audit_path:
        return
    line = json.dumps({"user": user, "action": action, "resource": resource, "allowed": allowed})
    with _audit_lock, open(_audit_path, "a", encoding="utf-8") as out:
        out.write(line + "\n")


_original_init = access_control.IAMRequestBase.__init__
_original_check = access_control.IAMRequestBase.check_action_permitted
_original_matches = access_control.IAMPolicyStatement._check_element_matches


def init(self, *args, **kwargs):
    _original_init(self, *args, **kwargs)
    self._action = AUTHORISED_AS.get(self._action, self._action)


def check_action_permitted(self, resource):
    self._sluice_resource = resource
    user = self._access_key.arn.rsplit("/", 1)[-1]
    try:
        _original_check(self, resource)
    except Exception:
        audit(user, self._action, resource, False)
        raise
    audit(user, self._action, resource, True)


def check_element_matches(self, statement_element, value):
    if statement_element == "Resource" and value == "*":
        return True
    return _original_matches(self, statement_element, value)


class S3ActionDenied(S3AccessDeniedError):
    def __init__(self, message):
        S3ClientError.__init__(self, "AccessDenied", message)


def raise_s3_access_denied(self):
    resource = getattr(self, "_sluice_resource", "*")
    raise S3ActionDenied(
        f"User: {self._access_key.arn} is not authorized to perform: {self._action} on resource: "
        f'"{resource}" because no identity-based policy allows the {self._action} action'
    )


_original_denied = access_control.IAMRequest._raise_access_denied


class JsonAccessDenied(JsonRESTError):
    code = 400

    def __init__(self, message):
        super().__init__("AccessDeniedException", message)


def raise_access_denied(self):
    if self._headers.get("X-Amz-Target"):
        raise JsonAccessDenied(f"User: {self._access_key.arn} is not authorized to perform: {self._action}")
    _original_denied(self)


def seed_admin():
    backend = iam_backends[ACCOUNT_ID]["aws"]
    backend.create_user(region_name="us-east-1", user_name=ADMIN_USER)
    backend.put_user_policy(
        ADMIN_USER,
        "administrator",
        json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
    )
    key = backend.create_access_key(ADMIN_USER)
    backend.access_keys.pop(key.physical_resource_id, None)
    key.access_key_id, key.secret_access_key = ADMIN_KEY
    backend.access_keys[key.physical_resource_id] = key


def main():
    access_control.IAMRequestBase.__init__ = init
    access_control.IAMRequestBase.check_action_permitted = check_action_permitted
    access_control.IAMPolicyStatement._check_element_matches = check_element_matches
    access_control.S3IAMRequest._raise_access_denied = raise_s3_access_denied
    access_control.IAMRequest._raise_access_denied = raise_access_denied
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    ActionAuthenticatorMixin.request_count = 0
    seed_admin()
    server.main(sys.argv[1:])


if __name__ == "__main__":
    main()
